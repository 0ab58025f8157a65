"""klomflow: score machine-unlearning methods with KLOM against retrained oracles."""

__version__ = "0.1.0"
