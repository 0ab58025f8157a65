"""Reporting: KLOM and accuracy tables, the paper tables' selection and intervals, their
Markdown and LaTeX, figures, and the privacy tables."""
