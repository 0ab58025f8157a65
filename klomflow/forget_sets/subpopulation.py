"""`subpopulation`: one fine class inside a coarse label.
"""

from __future__ import annotations

import numpy as np

from klomflow.forget_sets.ranking import SUBPOPULATION_SELECTIONS, check_choice, check_size

# ---------------------------------------------------------------------------
# subpopulation (section 5)


def subpopulation(fine_labels, coarse_labels, subclass: int, size: int | None = None,
                  select: str = "first", seed: int = 0) -> np.ndarray:
    """Training points of fine class `subclass`, all of one coarse label (section 5).

    fine_labels, coarse_labels: [n_train]. `first` takes the `size` smallest
    indices (KLOM's Living-17 files); `random` a seeded sample. size None = all.
    """
    fine_labels = np.asarray(fine_labels)
    coarse_labels = np.asarray(coarse_labels)
    if fine_labels.shape != coarse_labels.shape or fine_labels.ndim != 1:
        raise ValueError(f"subclass: fine and coarse labels must be [n_train] alike, got "
                         f"{fine_labels.shape} and {coarse_labels.shape}")
    check_choice("select", select, SUBPOPULATION_SELECTIONS)
    indices = np.flatnonzero(fine_labels == subclass)
    if indices.size == 0:
        known = np.unique(fine_labels)
        raise ValueError(f"subclass: no training point has fine label {subclass!r} "
                         f"(labels {int(known.min())}..{int(known.max())})")
    coarse = np.unique(coarse_labels[indices])
    if coarse.size != 1:
        raise ValueError(f"subclass: fine class {subclass} spans coarse labels "
                         f"{coarse.tolist()}; a subpopulation must lie inside one")
    size = indices.size if size is None else check_size(
        size, indices.size, f"training points of fine class {subclass}")
    if select == "first":
        chosen = indices[:size]
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(indices, size, replace=False))
    return chosen.astype(np.int64)


