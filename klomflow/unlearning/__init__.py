"""Unlearning: one module per method behind one interface (methods/), and the ensemble
twins that unlearn a job's models together (twins.py)."""
