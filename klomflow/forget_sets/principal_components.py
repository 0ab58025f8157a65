"""`datamodel_pc`: training points ranked by a principal component of the margin datamodel.

Θ[i, x] = effect of training point i on the margin of training point x
([source, target], float32 [n_train, n_train]). At CIFAR-10 scale it is a
10 GB memmap: the randomized PCA reads it in row blocks of BLOCK_ELEMENTS
values and never holds a second n x n array.
"""

from __future__ import annotations

import numpy as np

from klomflow.forget_sets.ranking import (
    NORMALIZATIONS,
    ROWS,
    SIDES,
    SOLVERS,
    check_choice,
    check_size,
    rank_order,
)

# `solver: auto` decomposes exactly up to this many training points (seconds);
# above EXACT_LIMIT an exact SVD would take hours and tens of GB, so it is refused.
AUTO_EXACT_LIMIT = 5000
EXACT_LIMIT = 20000
# Randomized SVD (Halko et al. 2011): extra columns of the range finder and power
# iterations; sklearn's randomized_svd defaults for a handful of components.
OVERSAMPLES = 10
POWER_ITERATIONS = 4
# A singular value within 1% of its neighbour: the component is ill-defined.
GAP_WARNING = 0.01
# Values of Θ converted to float64 at a time (32 MB): 167 rows of a 50k x 50k Θ.
BLOCK_ELEMENTS = 1 << 22

# ---------------------------------------------------------------------------
# datamodel_pc (section 3)


def _row_blocks(n_rows: int, n_columns: int):
    rows = max(1, BLOCK_ELEMENTS // max(n_columns, 1))
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def _check_finite(non_finite: int) -> None:
    if non_finite:
        raise ValueError(f"theta: the margin datamodel holds {non_finite} NaN or infinite values")


def _row_norms(squares, zero_diagonal: bool):
    """Row norms from their sums of squares; `normalize: l2` cannot scale a zero row."""
    zero = np.flatnonzero(squares == 0)
    if zero.size:
        raise ValueError(
            f"normalize: l2 cannot scale a zero row; training point {int(zero[0])} "
            f"({zero.size} in all) has an all-zero datamodel row"
            + (" once its diagonal is zeroed" if zero_diagonal else "")
        )
    return np.sqrt(squares)


class _ThetaOperator:
    """A_c = R (T - D) - 1 muᵀ as products, reading Θ one row block at a time.

    T = Θᵀ (rows "target") or Θ ("source"); D is Θ's diagonal when
    `zero_diagonal` (else 0); R = diag(1 / row norms of T - D) when
    normalising (else I); mu = column means of R (T - D) when centring (else 0).
    Only float64 copies of one row block of Θ and [n, columns] factors are held.
    """

    def __init__(self, theta, rows: str, center: bool, normalize: str, zero_diagonal: bool):
        self.theta = theta
        self.n = theta.shape[0]
        self.rows = rows
        self.zero_diagonal = zero_diagonal
        squares = np.zeros(self.n)
        non_finite = 0
        for block_rows, block in self._blocks():
            non_finite += int(np.size(block) - np.isfinite(block).sum())
            if normalize == "l2" and not non_finite:
                # Row x of T = column x of Θ (target) or row x (source).
                if rows == "target":
                    squares += (block * block).sum(axis=0)
                else:
                    squares[block_rows] = (block * block).sum(axis=1)
        _check_finite(non_finite)
        self.scale = None
        if normalize == "l2":
            self.scale = 1.0 / _row_norms(squares, zero_diagonal)
        self.mean = None
        if center:
            self.mean = self.rmatmul(np.ones((self.n, 1)))[:, 0] / self.n

    def _blocks(self):
        """(rows, float64 copy of Θ[rows] with the diagonal zeroed when asked)."""
        for block_rows in _row_blocks(self.n, self.n):
            block = np.array(self.theta[block_rows], dtype=np.float64)
            if self.zero_diagonal:
                local = np.arange(block_rows.stop - block_rows.start)
                block[local, local + block_rows.start] = 0.0
            yield block_rows, block

    def _theta_times(self, factor):
        """Θ' @ factor, factor [n, columns]."""
        result = np.empty((self.n, factor.shape[1]))
        for block_rows, block in self._blocks():
            result[block_rows] = block @ factor
        return result

    def _theta_transposed_times(self, factor):
        """Θ'ᵀ @ factor, factor [n, columns]."""
        result = np.zeros((self.n, factor.shape[1]))
        for block_rows, block in self._blocks():
            result += block.T @ factor[block_rows]
        return result

    def matmul(self, factor):
        """A_c @ factor."""
        if self.rows == "target":
            product = self._theta_transposed_times(factor)
        else:
            product = self._theta_times(factor)
        if self.scale is not None:
            product *= self.scale[:, None]
        if self.mean is not None:
            product -= self.mean @ factor
        return product

    def rmatmul(self, factor):
        """A_cᵀ @ factor."""
        scaled = factor if self.scale is None else factor * self.scale[:, None]
        if self.rows == "target":
            product = self._theta_times(scaled)
        else:
            product = self._theta_transposed_times(scaled)
        if self.mean is not None:
            product -= np.outer(self.mean, factor.sum(axis=0))
        return product


def _dense_matrix(theta, rows: str, center: bool, normalize: str, zero_diagonal: bool):
    """A_c as one float64 array (the exact solver; n_train <= EXACT_LIMIT)."""
    matrix = np.array(theta.T if rows == "target" else theta, dtype=np.float64)
    _check_finite(int(matrix.size - np.isfinite(matrix).sum()))
    if zero_diagonal:
        np.fill_diagonal(matrix, 0.0)
    if normalize == "l2":
        matrix /= _row_norms((matrix * matrix).sum(axis=1), zero_diagonal)[:, None]
    if center:
        matrix -= matrix.mean(axis=0)
    return matrix


def _randomized_svd(operator: _ThetaOperator, columns: int, seed: int):
    """Halko et al.'s range finder with QR between power iterations: 2(q + 1) passes."""
    rng = np.random.default_rng(seed)
    test_matrix = rng.standard_normal((operator.n, columns))
    basis, _ = np.linalg.qr(operator.matmul(test_matrix))
    for _ in range(POWER_ITERATIONS):
        basis, _ = np.linalg.qr(operator.rmatmul(basis))
        basis, _ = np.linalg.qr(operator.matmul(basis))
    small = operator.rmatmul(basis).T  # [columns, n] = Qᵀ A_c
    left, singular_values, _ = np.linalg.svd(small, full_matrices=False)
    return basis @ left, singular_values


def _orient(scores):
    """Sign rule (section 3, step 5): the longer tail is "top"."""
    cubes = float(np.sum(scores ** 3))
    if cubes < 0:
        return -scores
    if cubes == 0 and scores.size:
        largest = rank_order(np.abs(scores))[0]
        if scores[largest] < 0:
            return -scores
    return scores


def _skewness(scores) -> float:
    deviations = scores - scores.mean()
    variance = float(np.mean(deviations ** 2))
    if variance == 0:
        return 0.0
    return float(np.mean(deviations ** 3) / variance ** 1.5)


def pc_scores(theta, *, component: int, rows: str = "target", center: bool = True,
              normalize: str = "none", zero_diagonal: bool = False, solver: str = "auto",
              seed: int = 0) -> dict:
    """Scores of every training point on principal component `component` of Θ (section 3).

    theta: Θ [n_train, n_train], any float dtype; a read-only np.memmap works
    (the randomized solver reads it in row blocks). `component` counts from 1
    (the largest singular value).

    Returns a dict: "scores" float64 [n_train] (U[:, k-1] S[k-1], oriented by
    the skew rule), "singular_values" S[0..k] (k + 1 values where the
    decomposition has them), "relative_gaps" (S_j - S_{j+1}) / S_j for the
    consecutive pairs of "singular_values", "skewness" of the scores, "solver"
    ("exact" or "randomized") and "warnings" (a gap next to component k below
    1%: the component may swap with its neighbour between runs).
    """
    check_choice("rows", rows, ROWS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_choice("solver", solver, SOLVERS)
    if np.ndim(theta) != 2 or theta.shape[0] != theta.shape[1]:
        raise ValueError(f"theta: the margin datamodel must be square [n_train, n_train], got "
                         f"shape {np.shape(theta)}")
    n = theta.shape[0]
    if isinstance(component, bool) or not isinstance(component, (int, np.integer)) \
            or not 1 <= component <= n:
        raise ValueError(f"component: {component!r} is outside 1..{n}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if solver == "auto":
        solver = "exact" if n <= AUTO_EXACT_LIMIT else "randomized"
    if solver == "exact" and n > EXACT_LIMIT:
        raise ValueError(f"solver: exact refuses {n} training points (more than {EXACT_LIMIT}: "
                         f"hours and tens of GB); use randomized or auto")
    k = int(component)
    if solver == "exact":
        left, singular_values, _ = np.linalg.svd(
            _dense_matrix(theta, rows, center, normalize, zero_diagonal), full_matrices=False)
    else:
        operator = _ThetaOperator(theta, rows, center, normalize, zero_diagonal)
        left, singular_values = _randomized_svd(operator, min(k + OVERSAMPLES, n), seed)
    scores = _orient(left[:, k - 1] * singular_values[k - 1])
    kept = np.array(singular_values[: k + 1], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(kept[:-1] > 0, (kept[:-1] - kept[1:]) / kept[:-1], 0.0)
    warnings = []
    for j in (k - 2, k - 1):  # the pairs (k-1, k) and (k, k+1), 1-based
        if 0 <= j < gaps.size and gaps[j] < GAP_WARNING:
            warnings.append(
                f"component {k}: singular values {j + 1} and {j + 2} differ by "
                f"{gaps[j]:.2%} (< {GAP_WARNING:.0%}); the component is ill-defined and "
                f"may swap with its neighbour"
            )
    return {"scores": np.ascontiguousarray(scores, dtype=np.float64),
            "singular_values": kept, "relative_gaps": gaps,
            "skewness": _skewness(scores), "solver": solver, "warnings": warnings}


def select_by_side(scores, size: int, side: str):
    """The `size` points at one end of `scores`, or size/2 at each (section 3, step 6).

    top = the first `size` of rank_order(scores), bottom = the first `size` of
    rank_order(-scores), both = size/2 of each. Returns (sorted int64 indices,
    cut score): the score of the first point left out, at rank size + 1 (None
    where every point was taken); for `both` the pair (top cut, bottom cut).
    `both` takes its bottom half from the points not already in its top half:
    with tied scores the two orders can start at the same points.
    """
    scores = np.asarray(scores, dtype=np.float64)
    check_choice("side", side, SIDES)
    n = scores.size
    size = check_size(size, n)
    if side == "both":
        if size % 2:
            raise ValueError(f"size: side both takes size/2 points at each end; {size} is odd")
        half = size // 2
        top, top_cut = _take_prefix(scores, rank_order(scores), half)
        left = rank_order(-scores)
        left = left[~np.isin(left, top)]
        bottom, bottom_cut = _take_prefix(scores, left, half)
        return np.sort(np.concatenate([top, bottom])), (top_cut, bottom_cut)
    order = rank_order(scores if side == "top" else -scores)
    chosen, cut = _take_prefix(scores, order, size)
    return np.sort(chosen), cut


def _take_prefix(scores, order, size):
    cut = float(scores[order[size]]) if size < order.size else None
    return order[:size].astype(np.int64), cut


