"""Derived forget sets: the conventions every algorithm shares, and their limits.

docs/forget_sets.md is the specification of the derived kinds: `datamodel_pc`
(principal_components.py), `nearest_neighbors` (neighbours.py), `subpopulation`
(subpopulation.py) and the `worst_case` proxies (proxies.py; bilevel.py holds the one
that needs torch).

Pure functions of arrays, numpy and scipy only: the workflow reads files,
writes sidecars and prefixes error messages. Every ValueError message starts
with the key it concerns (`component: ...`, `anchor: ...`), so that the caller
can raise `ForgetSetError(f"forget_sets.{name}.{error}")`.

Shared conventions:
- scores are float64; `rank_order` orders them from high to low, ties to the
  smaller training index, and every selection takes a prefix of that order;
- results are sorted unique int64 training indices.
"""

from __future__ import annotations

import numpy as np

SIDES = ("top", "bottom", "both")
ROWS = ("target", "source")
NORMALIZATIONS = ("none", "l2")
SOLVERS = ("auto", "exact", "randomized")
METRICS = ("cosine", "euclidean")
SUBPOPULATION_SELECTIONS = ("first", "random")

def rank_order(scores) -> np.ndarray:
    """Indices from the highest score to the lowest; ties go to the smaller index."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores: expected one score per training point, got shape "
                         f"{scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores: {int(np.isnan(scores).sum())} scores are NaN")
    return np.lexsort((np.arange(len(scores)), -scores))


def check_size(size, n: int, what: str = "training points") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size: expected an integer, got {size!r}")
    if not 1 <= size <= n:
        raise ValueError(f"size: {size} is outside 1..{n} ({n} {what})")
    return int(size)


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")


