"""`worst_case` proxies: training points ranked by how hard forgetting them looks (in-out
KLOM of subset models, self-influence, a datamodel group).
"""

from __future__ import annotations

import numpy as np

from klomflow.forget_sets.ranking import check_size
from klomflow.metrics.klom import DEFAULT_OPTIONS, KlomOptions

# Models x points per chunk of the in/out KLOM (16 MB of float64).
KLOM_CHUNK_ELEMENTS = 1 << 21

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
    size = check_size(size, n)
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
