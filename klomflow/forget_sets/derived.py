"""Derived forget sets: the algorithms behind four forget-set kinds.

../shared/FORGET-SETS.md is the specification; each function names the
section it implements. `datamodel_pc` (section 3) ranks training points by a
principal component of the margin datamodel Θ, `nearest_neighbors` (section 4)
takes the points most similar to an anchor, `subpopulation` (section 5) one
fine class inside a coarse label, and the `worst_case` proxies (section 6)
rank points by how hard forgetting them looks. `klomflow.forget_sets.bilevel`
holds the one proxy that needs torch.

Pure functions of arrays, numpy and scipy only: the workflow reads files,
writes sidecars and prefixes error messages. Every ValueError message starts
with the key it concerns (`component: ...`, `anchor: ...`), so that the caller
can raise `ForgetSetError(f"forget_sets.{name}.{error}")`.

Shared conventions (section 1):
- scores are float64; `rank_order` orders them from high to low, ties to the
  smaller training index, and every selection takes a prefix of that order;
- results are sorted unique int64 training indices.

Θ[i, x] = effect of training point i on the margin of training point x
([source, target], float32 [n_train, n_train]). At CIFAR-10 scale it is a
10 GB memmap: the randomized PCA reads it in row blocks of BLOCK_ELEMENTS
values and never holds a second n x n array.
"""

from __future__ import annotations

import numpy as np

from klomflow.metrics.klom import DEFAULT_OPTIONS, KlomOptions

SIDES = ("top", "bottom", "both")
ROWS = ("target", "source")
NORMALIZATIONS = ("none", "l2")
SOLVERS = ("auto", "exact", "randomized")
METRICS = ("cosine", "euclidean")
SUBPOPULATION_SELECTIONS = ("first", "random")

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
# Models x points per chunk of the in/out KLOM (16 MB of float64).
KLOM_CHUNK_ELEMENTS = 1 << 21


def rank_order(scores) -> np.ndarray:
    """Indices from the highest score to the lowest; ties go to the smaller index."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores: expected one score per training point, got shape "
                         f"{scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores: {int(np.isnan(scores).sum())} scores are NaN")
    return np.lexsort((np.arange(len(scores)), -scores))


def _check_size(size, n: int, what: str = "training points") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size: expected an integer, got {size!r}")
    if not 1 <= size <= n:
        raise ValueError(f"size: {size} is outside 1..{n} ({n} {what})")
    return int(size)


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")


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
    _check_choice("rows", rows, ROWS)
    _check_choice("normalize", normalize, NORMALIZATIONS)
    _check_choice("solver", solver, SOLVERS)
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
    _check_choice("side", side, SIDES)
    n = scores.size
    size = _check_size(size, n)
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


# ---------------------------------------------------------------------------
# nearest_neighbors (section 4)


def training_rows(embedding, n_train: int, n_points: int):
    """The training rows of an embedding file's array: [n_train or n_points, d] -> [n_train, d]."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2:
        raise ValueError(f"path: embeddings must be 2-D [points, features], got shape "
                         f"{embedding.shape}")
    if len(embedding) not in (n_train, n_points):
        raise ValueError(f"path: embeddings have {len(embedding)} rows; expected {n_train} "
                         f"(training points) or {n_points} (training then validation points)")
    return embedding[:n_train]


def nearest_neighbors(embeddings, anchor: int, size: int, metric: str = "cosine",
                      include_anchor: bool = True):
    """The `size` training points most similar to `anchor` (section 4, steps 1-3).

    embeddings: one [n_train, d_m] array per model (a single 2-D array is one
    model); features of different models are not aligned, so the similarities
    are averaged, never the features. cosine: rows normalised, a zero row has
    similarity 0 (a zero anchor row is an error); euclidean: minus the distance.
    With include_anchor the anchor is always a member (a near-duplicate may tie
    it at similarity 1) and size - 1 others follow. Returns (sorted int64
    indices, mean similarity float64 [n_train]).
    """
    _check_choice("metric", metric, METRICS)
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        embeddings = [embeddings]
    embeddings = list(embeddings)
    if not embeddings:
        raise ValueError("path: no embeddings given")
    n = None
    for model, embedding in enumerate(embeddings):
        shape = np.shape(embedding)
        if len(shape) != 2 or shape[1] < 1:
            raise ValueError(f"path: embedding {model} must be 2-D [n_train, features], got "
                             f"shape {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise ValueError(f"path: embedding {model} has {shape[0]} rows, embedding 0 has {n}")
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) \
            or not 0 <= anchor < n:
        raise ValueError(f"anchor: {anchor!r} is not a training index (0..{n - 1})")
    size = _check_size(size, n if include_anchor else n - 1,
                       "training points" if include_anchor else "training points besides "
                       "the anchor")
    similarity = np.zeros(n)
    for model, embedding in enumerate(embeddings):
        features = np.asarray(embedding, dtype=np.float64)
        if not np.isfinite(features).all():
            raise ValueError(f"path: embedding {model} holds NaN or infinite values")
        if metric == "cosine":
            norms = np.sqrt((features * features).sum(axis=1))
            if norms[anchor] == 0:
                raise ValueError(f"anchor: training point {anchor} has a zero embedding in "
                                 f"model {model}; its cosine similarity is undefined")
            unit = features / np.where(norms > 0, norms, 1.0)[:, None]
            similarity += unit @ unit[anchor]
        else:
            difference = features - features[anchor]
            similarity -= np.sqrt((difference * difference).sum(axis=1))
    similarity /= len(embeddings)
    order = rank_order(similarity)
    others = order[order != anchor]
    if include_anchor:
        chosen = np.concatenate([[anchor], others[: size - 1]])
    else:
        chosen = others[:size]
    return np.sort(chosen).astype(np.int64), similarity


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
    _check_choice("select", select, SUBPOPULATION_SELECTIONS)
    indices = np.flatnonzero(fine_labels == subclass)
    if indices.size == 0:
        known = np.unique(fine_labels)
        raise ValueError(f"subclass: no training point has fine label {subclass!r} "
                         f"(labels {int(known.min())}..{int(known.max())})")
    coarse = np.unique(coarse_labels[indices])
    if coarse.size != 1:
        raise ValueError(f"subclass: fine class {subclass} spans coarse labels "
                         f"{coarse.tolist()}; a subpopulation must lie inside one")
    size = indices.size if size is None else _check_size(
        size, indices.size, f"training points of fine class {subclass}")
    if select == "first":
        chosen = indices[:size]
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(indices, size, replace=False))
    return chosen.astype(np.int64)


# ---------------------------------------------------------------------------
# worst_case proxies (section 6)


def _check_margins(subset_margins, masks=None):
    margins = np.asarray(subset_margins)
    if margins.ndim != 2:
        raise ValueError(f"subset_margins: expected [n_models, n_train], got {margins.shape}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != margins.shape:
            raise ValueError(f"masks: shape {masks.shape} differs from the margins' "
                             f"{margins.shape}")
        if masks.dtype != bool:
            if not np.isin(masks, (0, 1)).all():
                raise ValueError("masks: expected booleans or 0/1")
            masks = masks.astype(bool)
    return margins, masks


def inout_klom_scores(subset_margins, masks, options: KlomOptions = DEFAULT_OPTIONS
                      ) -> np.ndarray:
    """Per training point, KLOM of its margins in subset models with it IN vs OUT.

    subset_margins: [M, n_train] margins of the training points in M subset
    models; masks: bool [M, n_train], True where the model trained on the
    point. The models with point i in play "unlearned", those without it
    "oracle": the do-nothing KLOM of the singleton {i} (section 6, inout_klom).

    Equal to klomflow.metrics.klom.klom_one_point_reference(margins[masks[:, i], i],
    margins[~masks[:, i], i], options) at every point: both sides share one
    range (all M models' margins), so each point's bin edges are those of the
    reference, each sample's bin is found against those edges, and the
    per-bin terms are added in the reference's order.
    """
    margins, masks = _check_margins(subset_margins, masks)
    n_models, n = margins.shape
    inside_count = masks.sum(axis=0)
    lacking = np.flatnonzero((inside_count == 0) | (inside_count == n_models))
    if lacking.size:
        point = int(lacking[0])
        raise ValueError(f"masks: training point {point} is in {int(inside_count[point])} of "
                         f"{n_models} subset models; in/out KLOM needs models on both sides "
                         f"({lacking.size} such points)")
    result = np.empty(n)
    chunk = max(1, KLOM_CHUNK_ELEMENTS // n_models)
    for start in range(0, n, chunk):
        window = slice(start, min(start + chunk, n))
        result[window] = _inout_klom_chunk(margins[:, window], masks[:, window], options)
    return result


def _inout_klom_chunk(margins, inside, options: KlomOptions):
    margins = np.clip(np.asarray(margins, dtype=np.float64), -options.clip, options.clip)
    if not np.isfinite(margins).all():
        raise ValueError("subset_margins: NaN margins (leave out diverged models first, "
                         "klomflow.metrics.klom.finite_models)")
    n_models, n_points = margins.shape
    bins = options.bins
    low = margins.min(axis=0)
    high = margins.max(axis=0)
    high = np.where(high <= low, low + 1.0, high)
    edges = np.linspace(low, high, bins + 1, axis=1)  # [n_points, bins+1], as the reference
    columns = np.arange(n_points)
    # Index of the last edge <= the sample: a guess from the bin width, then
    # corrected against the edges themselves, so rounding cannot move a sample
    # to a neighbouring bin. np.digitize's answer is that index + 1.
    last = np.floor((margins - low) / (high - low) * bins)
    last = np.clip(np.nan_to_num(last), 0, bins).astype(np.int64)
    while True:
        above = edges[columns, last] > margins
        if not above.any():
            break
        last -= above
    while True:
        below = (last < bins) & (edges[columns, np.minimum(last + 1, bins)] <= margins)
        if not below.any():
            break
        last += below
    index = last + 1  # 1..bins+1; bins+1 = the sample equals the upper edge
    if options.binning == "inclusive":
        index = np.minimum(index, bins)
    key = (columns * 2 + inside) * (bins + 2) + index
    counts = np.bincount(key.ravel(), minlength=n_points * 2 * (bins + 2))
    counts = counts.reshape(n_points, 2, bins + 2)[:, :, 1: bins + 1]
    total = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = np.where(total > 0, counts / total, 0.0)
    unlearned, oracle = probabilities[:, 1], probabilities[:, 0]
    p, q = (unlearned, oracle) if options.direction == "unlearned_to_oracle" \
        else (oracle, unlearned)
    q = np.maximum(q, options.eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q), 0.0)
    result = np.zeros(n_points)
    for column in range(bins):  # the reference's summation order
        result += terms[:, column]
    return result


def _margin_spread(subset_margins):
    margins, _ = _check_margins(subset_margins)
    spread = np.asarray(margins, dtype=np.float64).std(axis=0, ddof=1)
    bad = np.flatnonzero(~(spread > 0))
    if bad.size:
        raise ValueError(f"subset_margins: training point {int(bad[0])} has margin standard "
                         f"deviation {spread[bad[0]]} over the subset models ({bad.size} such "
                         f"points); the proxy divides by it")
    return spread


def self_influence_scores(theta, subset_margins) -> np.ndarray:
    """Θ[i, i] / sd_i: point i's own datamodel weight in units of its margin's spread.

    sd_i is the standard deviation (ddof 1) of i's margin over the subset
    models [M, n_train]; a zero sd is an error naming the point.
    """
    spread = _margin_spread(subset_margins)
    if np.shape(theta) != (spread.size, spread.size):
        raise ValueError(f"theta: shape {np.shape(theta)} does not match the "
                         f"{spread.size} training points of the margins")
    diagonal = np.array(np.diagonal(theta), dtype=np.float64)
    if not np.isfinite(diagonal).all():
        raise ValueError("theta: the margin datamodel's diagonal holds NaN or infinite values")
    return diagonal / spread


def datamodel_group(theta, sd, size: int, *, theta_transposed=None):
    """Greedy group with the largest predicted standardised margin drop (section 6).

    Z[i, x] = Θ[i, x] / sd[x]. Starting from F = {}, add the point j not in F
    with the largest gain a_j + r_j + Z[j, j] (ties to the smaller index),
    where a = sum over F of Z[:, f] (effects on F's members) and
    r = sum over F of Z[f, :] (F's effects); `size` times. The gain is the
    increase of the sum of Z over F x F.

    theta: Θ [n_train, n_train], possibly a memmap: one row and one column are
    read per pick. theta_transposed (optional, e.g. a memmap of Θᵀ) serves the
    columns as rows, which a row-major file on disk reads much faster.
    Returns (int64 indices in pick order, float64 gains at each pick).
    """
    sd = np.asarray(sd, dtype=np.float64)
    n = sd.size
    if np.shape(theta) != (n, n):
        raise ValueError(f"theta: shape {np.shape(theta)} does not match the {n} standard "
                         f"deviations")
    if theta_transposed is not None and np.shape(theta_transposed) != (n, n):
        raise ValueError(f"theta: the transposed copy has shape {np.shape(theta_transposed)}")
    bad = np.flatnonzero(~(sd > 0) | ~np.isfinite(sd))
    if bad.size:
        raise ValueError(f"subset_margins: training point {int(bad[0])} has margin standard "
                         f"deviation {sd[bad[0]]}; the proxy divides by it")
    size = _check_size(size, n)
    own = np.array(np.diagonal(theta), dtype=np.float64) / sd
    on_members = np.zeros(n)  # a
    of_members = np.zeros(n)  # r
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(size, dtype=np.int64)
    gains = np.empty(size)
    for step in range(size):
        gain = on_members + of_members + own
        if not np.isfinite(gain).all():
            raise ValueError("theta: the margin datamodel holds NaN or infinite values")
        gain[taken] = -np.inf
        pick = int(np.argmax(gain))  # the first maximum: ties to the smaller index
        picks[step], gains[step] = pick, gain[pick]
        taken[pick] = True
        column = theta_transposed[pick] if theta_transposed is not None else theta[:, pick]
        on_members += np.asarray(column, dtype=np.float64) / sd[pick]
        of_members += np.asarray(theta[pick], dtype=np.float64) / sd
    return picks, gains
