"""Data: the datasets a run trains and scores on, and the published benchmark's files
(layouts, checks, reading)."""
