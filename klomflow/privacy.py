"""Privacy-attack metrics from margins alone: the competition's forgetting quality, U-LiRA, LiRA.

Follows ../shared/PRIVACY.md, which transcribes the released code; where the
papers and the code differ, the code is followed.

(A) The NeurIPS 2023 Machine Unlearning Competition (Triantafillou et al. 2024;
google-deepmind/unlearning_evaluation `metric.py`, `main.py`): per point, an
(epsilon, delta) bound from the best single- and double-threshold attack that
tells the unlearned models' statistics from the retrained ones', bucketed into
H(eps) = 2^-floor(2 eps) (0 from ceil(ln(N_u - 1)) on) and averaged over the
forget set (forgetting quality F), then weighted by the retain and test
accuracy ratios. Differences from the released scorer, all deliberate:
- its `assert thr_eps` raises whenever more than one threshold survives (a
  numpy array has no truth value); we implement the intent, "some threshold
  survived", and give eps = 0 when none does;
- grids, rates and epsilons are float64; the scorer's rates are float32 means,
  its epsilons are computed from them in float32, and its single-threshold grid
  is torch.linspace in torch's default float32. So epsilons agree to about 4e-7
  (float32 precision), not to the last bit, and can differ by a whole count
  where a statistic lies between a float64 grid value and its float32 rounding
  (tests/test_privacy_reference.py re-states the scorer's float32 rules);
- unlearned and retrained samples may differ in size (the scorer's np.where
  needs equal sizes), and diverged rows (NaN/inf) are dropped first.
The statistic is the logit-scaled confidence, which equals the margin up to the
scorer's 1e-45 floor (`logit_scaled_confidence`).

Speed: the scorer evaluates about 160k thresholds per point. Here every point
of a chunk is done at once, and a threshold's epsilon is looked up in a table
indexed by its pair of counts, which is all it depends on. Counts come from the
samples' positions in the (exactly reproduced) linspace grids. The double-
threshold family is searched by count pairs: each pair of merged-sample gaps
(where r and l fall) whose epsilon beats the single-threshold family's is
checked for a grid threshold that realises it, which gives the grid search's
result bit for bit (tests/test_privacy_speed.py compares the two).

(B) LiRA (Carlini et al. 2022, online, tensorflow/privacy `mi_lira_2021/plot.py`)
and U-LiRA (Hayes et al. 2024): per point, Gaussians fitted to IN and OUT
shadow models (median and ddof-0 std, as plot.py) and the likelihood ratio of
each target model's statistic. U-LiRA's IN shadows are the sample under test
(models that saw x and were then unlearned); LiRA's are the originals. OUT
shadows are the scored oracles. K-fold cross-fitting on the model index
(fold(k) = k mod K, the same k in every set because unlearned model k started
from original k) keeps every model from being both a shadow and a target.
`variance`: per_example (plot.py's default); fixed (plot.py's fix_variance: one
sigma, np.std over every IN-shadow value, for both sides); pooled (not in
plot.py: one sigma per side, the root mean square of that side's per-point
sigmas; called `global` before, a name still read).

This module imports numpy and scipy only, never torch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata

from klomflow.versions import PRIVACY as PRIVACY_VERSION

# Bump klomflow/versions.py's PRIVACY when a change here can change a privacy file.
VERSION = PRIVACY_VERSION

METRICS = ("competition", "ulira", "lira")
SPLITS = ("forget", "retain", "val")
# LiRA's Gaussians: per_example (a sigma per point and side, plot.py's default); fixed (plot.py's
# fix_variance: one sigma, np.std over every IN-shadow entry of the split, for both sides);
# pooled (one sigma per side, the root mean square of its per-point sigmas).
VARIANCES = ("per_example", "fixed", "pooled")
# Former names, still read: `global` was the pooled variance.
FORMER_VARIANCES = {"global": "pooled"}
# metric.py: DELTA, EPSILON_CAP, NUM_THRESHOLDS_PER_UNIT; the double-threshold buffer.
DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0
# A sample whose range is below 1% of the other's gets the capped epsilon.
RANGE_RATIO = 0.01
BUCKET_WIDTH = 0.5
# Added to sigma before the Gaussian log-density (plot.py).
SIGMA_FLOOR = 1e-30
TPR_FPR_LEVELS = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_0p1pct": 0.001}
# Fewer models than this leaves no buckets (competition) or too few shadows (LiRA).
MIN_MODELS = 3
# Below this many models per side the estimates are rough (a warning, not an error).
FEW_MODELS = 10


@dataclass(frozen=True)
class PrivacyOptions:
    metrics: tuple = METRICS
    delta: float = DELTA
    epsilon_cap: float = EPSILON_CAP
    thresholds_per_unit: int = THRESHOLDS_PER_UNIT
    buffer: float = BUFFER
    folds: int = 5
    variance: str = "per_example"
    max_points: int = 1000
    subset_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"privacy.metrics: unknown {unknown}; choose from {METRICS}")
        variance = FORMER_VARIANCES.get(self.variance, self.variance)
        if variance not in VARIANCES:
            raise ValueError(f"privacy.variance must be one of {VARIANCES}, got {self.variance!r}")
        object.__setattr__(self, "variance", variance)
        if self.folds < 2:
            raise ValueError("privacy.folds must be at least 2")

    def as_dict(self) -> dict:
        return asdict(self) | {"metrics": list(self.metrics)}


def logit_scaled_confidence(margins) -> np.ndarray:
    """phi = log(p_y + 1e-45) - log(1 - p_y + 1e-45) from margins, in float64.

    p_y / (1 - p_y) = exp(margin), so phi equals the margin up to the floor:
    within 2e-6 for |margin| <= 90, saturating at +-103.616.
    """
    margins = np.asarray(margins, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(expit(margins) + 1e-45) - np.log(expit(-margins) + 1e-45)


# --- (A) the competition's per-example epsilon -----------------------------------------------


def epsilon_table(n_positive: int, n_negative: int, delta: float = DELTA) -> np.ndarray:
    """eps of one threshold from its counts: [a, b] for a of n_positive, b of n_negative.

    a positives and b negatives are predicted positive: TPR = a/n_p, FNR =
    (n_p - a)/n_p, FPR = b/n_n, TNR = (n_n - b)/n_n (means of indicators, as
    metric.py). +inf for a perfect separation, -inf for a discarded threshold
    (FPR or FNR zero, or both log terms undefined), else
    max(0, nanmax(ln(1-delta-FPR) - ln FNR, ln(1-delta-FNR) - ln FPR)).
    """
    a = np.arange(n_positive + 1, dtype=np.float64)[:, None]
    b = np.arange(n_negative + 1, dtype=np.float64)[None, :]
    tpr, fnr = a / n_positive, (n_positive - a) / n_positive
    fpr, tnr = b / n_negative, (n_negative - b) / n_negative
    tpr, fnr, fpr, tnr = np.broadcast_arrays(tpr, fnr, fpr, tnr)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(1 - delta - fpr) - np.log(fnr)
        second = np.log(1 - delta - fnr) - np.log(fpr)
    both_nan = np.isnan(first) & np.isnan(second)
    value = np.fmax(first, second)  # fmax ignores one NaN, as nanmax
    value = np.maximum(value, 0.0)
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    discarded = ~perfect & ((fpr * fnr == 0) | both_nan)
    value = np.where(perfect, np.inf, value)
    return np.where(discarded, -np.inf, value)


def _grid_value(start, stop, num, index):
    """numpy.linspace(start, stop, num)[index], elementwise, bit for bit.

    numpy computes index * step + start with step = (stop - start) / (num - 1),
    puts `stop` itself last, and divides before multiplying when the step
    underflows to 0. Arrays broadcast; `index` must lie in [0, num).
    """
    start, stop = np.asarray(start, dtype=np.float64), np.asarray(stop, dtype=np.float64)
    num = np.asarray(num)
    div = np.maximum(num - 1, 1).astype(np.float64)
    delta = stop - start
    step = delta / div
    index = np.asarray(index, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        value = np.where(step == 0, index / div * delta, index * step) + start
    return np.where((index == num - 1) & (num > 1), stop, value)


def _grid_position_exact(values, start, stop, num):
    """#{j : linspace(start, stop, num)[j] <= value} by correcting a guess against exact values."""
    step = (stop - start) / np.maximum(num - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = np.floor((values - start) / step) + 1
    guess = np.where(np.isfinite(guess), guess, np.where(values >= start, num, 0))
    position = np.clip(guess, 0, num).astype(np.int64)
    while True:
        too_far = (position > 0) & (
            _grid_value(start, stop, num, np.maximum(position - 1, 0)) > values)
        short = (position < num) & (
            _grid_value(start, stop, num, np.minimum(position, np.maximum(num - 1, 0))) <= values)
        if not (too_far.any() or short.any()):
            return position
        position = position - too_far + short


# A value this close to a grid value (in steps) is placed by exact comparison; elsewhere the
# quotient's rounding error (below 1e-10 steps for |phi| <= 104 and 1e6 thresholds) cannot matter.
NEAR_GRID = 1e-6


def _grid_position(values, start, stop, num):
    """#{j : linspace(start, stop, num)[j] <= value}, i.e. searchsorted(grid, value, 'right').

    The quotient (value - start) / step places a value unless it lies within
    NEAR_GRID steps of a grid value (or the grid has under 2 values); those few
    are placed against the exact numpy.linspace values. Arguments broadcast;
    returns int64.
    """
    values = np.asarray(values, dtype=np.float64)
    start, stop, num = np.asarray(start), np.asarray(stop), np.asarray(num)
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = (values - start) / ((stop - start) / np.maximum(num - 1, 1))
        rounded = np.rint(quotient)
        near = ~(np.abs(quotient - rounded) >= NEAR_GRID) | (num < 2)
    position = np.clip(np.floor(quotient) + 1, 0, num)
    position = np.where(near, 0, position).astype(np.int64)
    if near.any():
        shape = position.shape
        pick = [np.broadcast_to(a, shape)[near] for a in (values, start, stop, num)]
        position[near] = _grid_position_exact(*pick)
    return position


def _single_threshold_epsilon(u, o, u_positive, table, n_u, n_o, per_unit):
    """Best eps of the single-threshold family: predict "positive" when phi >= t.

    u, o: sorted [c, n_u], [c, n_o]; u_positive [c]: P = u. Thresholds are
    linspace(min, max, ceil((max - min) * per_unit)) over both samples. Counts
    change only where a sample passes a grid value, so the best threshold is
    among j = 0 and each sample's grid position.
    """
    low = np.minimum(u[:, 0], o[:, 0])
    high = np.maximum(u[:, -1], o[:, -1])
    num = np.ceil((high - low) * per_unit).astype(np.int64)
    # K = #{j: t_j <= x}; x >= t_j exactly when j < K.
    k_u = _grid_position(u, low[:, None], high[:, None], num[:, None])
    k_o = _grid_position(o, low[:, None], high[:, None], num[:, None])
    candidates = np.concatenate([np.zeros((len(u), 1), dtype=np.int64), k_u, k_o], axis=1)
    valid = candidates < num[:, None]
    # #{x: K(x) > candidate}: K is nondecreasing along a sorted row, so one search of the rows
    # laid end to end (row i's values shifted by i * (num.max() + 1)) counts every row at once.
    shift = np.arange(len(u))[:, None] * (num.max() + 1)
    keys = candidates + shift
    count_u = n_u - (np.searchsorted((k_u + shift).ravel(), keys, side="right")
                     - np.arange(len(u))[:, None] * n_u)
    count_o = n_o - (np.searchsorted((k_o + shift).ravel(), keys, side="right")
                     - np.arange(len(u))[:, None] * n_o)
    offset = np.where(u_positive, 0, (n_u + 1) * (n_o + 1))[:, None]
    values = table[offset + count_u * (n_o + 1) + count_o]
    return np.where(valid, values, -np.inf).max(axis=1)


def _double_threshold_epsilon(u, o, q_is_u, table, n_u, n_o, per_unit, buffer, floor,
                              pairs_per_block=1 << 21):
    """Best eps of the double-threshold family where it exceeds `floor`, else -inf.

    Predict Q (the narrower sample) when l <= phi <= r. Right edges
    r_k = linspace(lo, hi, ceil((hi - lo) * per_unit)) with lo = Q.min() + w - buffer,
    hi = Q.max() + buffer (w the smaller range); for each r_k, ceil(2 * buffer * per_unit)
    left edges l_kj = linspace(r_k - w - buffer, r_k - w + buffer).

    The counts of a threshold depend only on where its edges fall among the merged sorted
    samples z_1 <= ... <= z_m: with p = #(z <= r) and q = #(z < l), [l, r] holds
    z_{q+1}..z_p (nothing when q >= p: the empty interval, counts (0, 0)). So every pair
    q < p whose table value beats `floor` is a candidate, and it is taken when some
    threshold realises it: a right edge with z_p <= r_k < z_{p+1} whose left grid has a
    value in (z_q, z_{q+1}], i.e. J_k(z_q) < J_k(z_{q+1}) with J_k(x) = #{j: l_kj <= x}
    (z_0 = -inf, z_{m+1} = +inf). The edges and J_k are computed exactly as the full grid
    search computes them (_grid_value, _grid_position), so the best realised candidate is
    the grid's best epsilon wherever that exceeds `floor` (tests/privacy_grid.py keeps the
    full search and the tests compare the two bit for bit).
    """
    c, m = len(u), n_u + n_o
    result = np.full(c, -np.inf)
    # Memory stays bounded: at most about pairs_per_block (point, p, q) cells at once.
    block = max(1, pairs_per_block // ((m + 1) * m // 2 or 1))
    if block < c:
        for start in range(0, c, block):
            part = slice(start, start + block)
            result[part] = _double_threshold_epsilon(u[part], o[part], q_is_u[part], table,
                                                     n_u, n_o, per_unit, buffer, floor[part],
                                                     pairs_per_block)
        return result
    width = np.minimum(u[:, -1] - u[:, 0], o[:, -1] - o[:, 0])
    q_min = np.where(q_is_u, u[:, 0], o[:, 0])
    q_max = np.where(q_is_u, u[:, -1], o[:, -1])
    low = (q_min + width) - buffer
    high = q_max + buffer
    n_right = np.ceil((high - low) * per_unit).astype(np.int64)
    n_left = int(math.ceil(2 * buffer * per_unit))
    k = np.arange(n_right.max())
    right = _grid_value(low[:, None], high[:, None], n_right[:, None],
                        np.minimum(k[None, :], n_right[:, None] - 1))  # [c, n_k]
    # The merged samples and, for p = 0..m, the counts of z_1..z_p as one integer
    # count_u * (n_o + 1) + count_o (the table's layout).
    merged = np.concatenate([u, o], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    z = np.take_along_axis(merged, order, axis=1)
    dtype = np.int32 if len(table) < 2 ** 31 else np.int64
    counts = np.zeros((c, m + 1), dtype=dtype)
    np.cumsum(np.where(order < n_u, n_o + 1, 1), axis=1, out=counts[:, 1:])
    pair_p, pair_q = np.tril_indices(m + 1, -1)  # every q < p
    index = np.take(counts, pair_p, axis=1)
    index -= np.take(counts, pair_q, axis=1)
    index[~q_is_u] += (n_u + 1) * (n_o + 1)  # the table's second role; [c, pairs]
    values = table.take(index)
    chosen = np.flatnonzero(values > floor[:, None])
    if not len(chosen):
        return result
    point, pair = np.divmod(chosen, len(pair_p))
    p, q, value = pair_p[pair], pair_q[pair], values.ravel()[chosen]
    # p_k = #(z <= r_k), nondecreasing in k: the right edges of p are a run of k.
    p_k = np.stack([np.searchsorted(z[i], right[i], side="right") for i in range(c)])
    runs = (p_k + np.arange(c)[:, None] * (m + 1)).ravel()
    first = np.searchsorted(runs, point * (m + 1) + p, side="left")
    n_edges = np.searchsorted(runs, point * (m + 1) + p, side="right") - first
    # One row per (candidate, right edge of its run).
    owner = np.repeat(np.arange(len(point)), n_edges)
    edge = np.arange(len(owner)) - np.repeat(np.cumsum(n_edges) - n_edges - first, n_edges)
    row, q_row = point[owner], q[owner]
    left_start = (right.ravel()[edge] - width[row]) - buffer
    left_stop = (right.ravel()[edge] - width[row]) + buffer
    below = np.where(q_row == 0, 0, _grid_position(z[row, np.maximum(q_row - 1, 0)],
                                                   left_start, left_stop, n_left))
    above = np.where(q_row == m, n_left, _grid_position(z[row, np.minimum(q_row, m - 1)],
                                                        left_start, left_stop, n_left))
    realised = np.zeros(len(point), dtype=bool)
    realised[owner[below < above]] = True
    np.maximum.at(result, point[realised], value[realised])
    return result


def _epsilon_chunk(u, o, table, options: PrivacyOptions):
    """eps and the range-rule flag of a chunk: u [c, n_u], o [c, n_o] float64 phi."""
    u, o = np.sort(u, axis=1), np.sort(o, axis=1)
    n_u, n_o = u.shape[1], o.shape[1]
    # P = o when the retrained median is larger, else P = u (a tie gives P = u).
    o_positive = np.median(o, axis=1) > np.median(u, axis=1)
    range_u, range_o = u[:, -1] - u[:, 0], o[:, -1] - o[:, 0]
    range_p = np.where(o_positive, range_o, range_u)
    range_n = np.where(o_positive, range_u, range_o)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Both ranges 0 gives 0/0 = NaN, which is not < 0.01 (as metric.py).
        range_rule = np.minimum(range_p, range_n) / np.maximum(range_p, range_n) < RANGE_RATIO
    # Q is the peakier sample: N when range_P >= range_N (ties too), else P.
    q_is_n = range_p >= range_n
    q_is_u = np.where(q_is_n, o_positive, ~o_positive)
    single = _single_threshold_epsilon(u, o, ~o_positive, table, n_u, n_o,
                                       options.thresholds_per_unit)
    # The double-threshold family matters only where it beats the single one (and 0); the
    # range rule replaces eps anyway.
    floor = np.where(range_rule, np.inf, np.maximum(single, 0.0))
    double = _double_threshold_epsilon(u, o, q_is_u, table, n_u, n_o,
                                       options.thresholds_per_unit, options.buffer, floor)
    # No surviving threshold gives 0 (the scorer's assertion means "some survived").
    epsilon = np.clip(np.maximum(np.maximum(single, double), 0.0), 0.0, options.epsilon_cap)
    return np.where(range_rule, options.epsilon_cap, epsilon), range_rule


def competition_epsilon(unlearned, oracle, options: PrivacyOptions = PrivacyOptions(),
                        chunk: int = 16, threads: int = 1):
    """Per-point eps of the competition: unlearned [n_u, n_points], oracle [n_o, n_points] phi.

    Returns (eps [n_points] float64, range_rule [n_points] bool). Rows must be
    finite (drop diverged ones first). `threads` runs chunks in parallel (numpy
    releases the GIL in its array loops).
    """
    unlearned = np.asarray(unlearned, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    n_u, n_o = len(unlearned), len(oracle)
    # Role 0: the unlearned sample is the positive one; role 1: the retrained one is.
    positive_u = epsilon_table(n_u, n_o, options.delta)
    positive_o = epsilon_table(n_o, n_u, options.delta).T
    table = np.concatenate([positive_u.ravel(), positive_o.ravel()])
    u_t, o_t = unlearned.T, oracle.T
    starts = range(0, u_t.shape[0], chunk)

    def run(start):
        return _epsilon_chunk(u_t[start:start + chunk], o_t[start:start + chunk], table, options)

    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(run, starts))
    else:
        parts = [run(start) for start in starts]
    if not parts:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def epsilon_one_point_reference(u, o, options: PrivacyOptions = PrivacyOptions()) -> float:
    """eps of one point, transcribed threshold by threshold from PRIVACY.md A.2 (for the tests)."""
    u, o = np.asarray(u, dtype=np.float64), np.asarray(o, dtype=np.float64)
    if np.median(o) > np.median(u):
        positive, negative = o, u
    else:
        positive, negative = u, o
    range_p = positive.max() - positive.min()
    range_n = negative.max() - negative.min()
    with np.errstate(divide="ignore", invalid="ignore"):
        if min(range_p, range_n) / max(range_p, range_n) < RANGE_RATIO:
            return float(options.epsilon_cap)
    per_unit = options.thresholds_per_unit
    both = np.concatenate([positive, negative])
    num = int(np.ceil((both.max() - both.min()) * per_unit))
    t = np.linspace(both.min(), both.max(), num)[:, None]
    single = [np.mean(positive >= t, axis=1), np.mean(positive < t, axis=1),
              np.mean(negative >= t, axis=1), np.mean(negative < t, axis=1)]
    width = min(range_p, range_n)
    q, w = (negative, positive) if range_p >= range_n else (positive, negative)
    low = q.min() + width - options.buffer
    high = q.max() + options.buffer
    n_left = int(np.ceil(2 * options.buffer * per_unit))
    right_edges = np.linspace(low, high, int(np.ceil((high - low) * per_unit)))
    left = np.concatenate([np.linspace(r - width - options.buffer, r - width + options.buffer,
                                       n_left) for r in right_edges])[:, None]
    right = np.repeat(right_edges, n_left)[:, None]
    inside_q, inside_w = (left <= q) & (q <= right), (left <= w) & (w <= right)
    double = [inside_q.mean(axis=1), (~inside_q).mean(axis=1), inside_w.mean(axis=1),
              (~inside_w).mean(axis=1)]
    tpr, fnr, fpr, tnr = (np.concatenate([d, s]) for d, s in zip(double, single))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.stack([np.log(1 - options.delta - fpr) - np.log(fnr),
                          np.log(1 - options.delta - fnr) - np.log(fpr)])
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    kept = ~perfect & ~(fpr * fnr == 0) & ~np.isnan(terms).all(axis=0)
    values = np.maximum(0.0, np.nanmax(terms[:, kept], axis=0)) if kept.any() else np.zeros(0)
    values = np.concatenate([values, np.full(perfect.sum(), np.inf)])
    return float(np.clip(values.max() if len(values) else 0.0, 0.0, options.epsilon_cap))


def max_epsilon(n_unlearned: int) -> float:
    """ceil(ln(N_u - 1)): the scorer's bound on a resolvable eps; NaN below 3 models."""
    if n_unlearned < MIN_MODELS:
        return math.nan
    return float(math.ceil(math.log(n_unlearned - 1)))


def bucket_points(epsilon, n_unlearned: int) -> np.ndarray:
    """H(eps) = 2^-floor(eps / 0.5) below max_epsilon, else 0 (NaN below 3 models)."""
    epsilon = np.asarray(epsilon, dtype=np.float64)
    limit = max_epsilon(n_unlearned)
    if math.isnan(limit):
        return np.full(epsilon.shape, np.nan)
    bucket = np.floor(epsilon / BUCKET_WIDTH)
    return np.where(bucket < 2 * limit, np.exp2(-bucket), 0.0)


# --- (B) LiRA and U-LiRA ------------------------------------------------------------------------


def fold_parameters(shadows, shadow_index, fold: int, n_folds: int):
    """Median and ddof-0 std per point over the shadows outside `fold`.

    shadows [n, n_points] phi, shadow_index [n]: each row's model index k
    (fold k mod n_folds). Rows of `fold` itself never enter.
    """
    rows = np.asarray(shadow_index) % n_folds != fold
    chosen = shadows[rows]
    return np.median(chosen, axis=0), chosen.std(axis=0)


def _constant_shadows(shadows, shadow_index, fold: int, n_folds: int):
    chosen = shadows[np.asarray(shadow_index) % n_folds != fold]
    return chosen.max(axis=0) == chosen.min(axis=0)


def _log_density(x, mean, sigma):
    # The constant -log(sqrt(2 pi)) cancels in the ratio.
    return -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma)


def lira_scores(targets, target_index, in_shadows, in_index, out_shadows, out_index,
                n_folds: int, variance: str = "per_example"):
    """Cross-fitted online LiRA scores of the target rows and of the OUT rows.

    For each fold f: Gaussians fitted on the IN and OUT shadows outside f, and
    s = log N(x; in) - log N(x; out) (sigma + 1e-30) for the targets and OUT
    rows in f (higher: "looks like the IN side"). Returns (positive scores
    [n_targets, n_points], negative scores [n_out, n_points], zero_std_points).
    """
    variance = FORMER_VARIANCES.get(variance, variance)
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    positive = np.empty(targets.shape)
    negative = np.empty(out_shadows.shape)
    zero_std = np.zeros(targets.shape[1], dtype=bool)
    for fold in range(n_folds):
        mean_in, std_in = fold_parameters(in_shadows, in_index, fold, n_folds)
        mean_out, std_out = fold_parameters(out_shadows, out_index, fold, n_folds)
        # All shadows equal (sigma 0 but for rounding: numpy's std of a constant need not be 0).
        zero_std |= _constant_shadows(in_shadows, in_index, fold, n_folds)
        zero_std |= _constant_shadows(out_shadows, out_index, fold, n_folds)
        if variance == "fixed":  # plot.py: std_in = std_out = np.std(dat_in), over all entries
            fixed = in_shadows[np.asarray(in_index) % n_folds != fold].std()
            std_in = std_out = np.full_like(std_in, fixed)
        elif variance == "pooled":  # one sigma per side: the root mean square over the points
            std_in = np.full_like(std_in, np.sqrt(np.mean(std_in ** 2)))
            std_out = np.full_like(std_out, np.sqrt(np.mean(std_out ** 2)))
        sigma_in, sigma_out = std_in + SIGMA_FLOOR, std_out + SIGMA_FLOOR
        for rows, index, result in ((targets, target_index, positive),
                                    (out_shadows, out_index, negative)):
            mine = np.asarray(index) % n_folds == fold
            x = rows[mine]
            result[mine] = _log_density(x, mean_in, sigma_in) - _log_density(x, mean_out,
                                                                              sigma_out)
    return positive, negative, int(zero_std.sum())


def roc_summary(positive, negative) -> dict:
    """Pooled ROC of scores (higher means positive), ties grouped as one ROC point.

    auc = P(s+ > s-) + P(s+ = s-)/2; balanced_accuracy = max (1 + TPR - FPR)/2;
    tpr_at_fpr(a) = max TPR over ROC points, (0, 0) included, with FPR < a.
    """
    positive = np.asarray(positive, dtype=np.float64).ravel()
    negative = np.asarray(negative, dtype=np.float64).ravel()
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tpr = np.r_[0.0, np.cumsum(labels)[last_of_tie] / len(positive)]
    fpr = np.r_[0.0, np.cumsum(1 - labels)[last_of_tie] / len(negative)]
    summary = {"auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
               "balanced_accuracy": float(np.max((1 + tpr - fpr) / 2))}
    for name, level in TPR_FPR_LEVELS.items():
        summary[name] = float(tpr[fpr < level].max())
    return summary


def point_auc(positive, negative) -> np.ndarray:
    """Per point (column): P(s+ > s-) + P(s+ = s-)/2, from average ranks."""
    n_pos, n_neg = len(positive), len(negative)
    ranks = rankdata(np.concatenate([positive, negative]), axis=0)
    return (ranks[:n_pos].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def point_balanced_accuracy(positive, negative) -> np.ndarray:
    """Per point (column): max over tie-grouped thresholds of (1 + TPR - FPR)/2."""
    n_pos, n_neg = len(positive), len(negative)
    scores = np.concatenate([positive, negative])
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)][:, None]
    order = np.argsort(-scores, axis=0, kind="stable")
    scores = np.take_along_axis(scores, order, axis=0)
    labels = np.take_along_axis(np.broadcast_to(labels, scores.shape), order, axis=0)
    value = (1 + np.cumsum(labels, axis=0) / n_pos - np.cumsum(1 - labels, axis=0) / n_neg) / 2
    last_of_tie = np.vstack([scores[1:] != scores[:-1], np.ones((1, scores.shape[1]), bool)])
    return np.maximum(np.where(last_of_tie, value, -np.inf).max(axis=0), 0.5)


def lira_summary(positive, negative, zero_std_points: int, n_folds: int, variance: str):
    """Pooled and per-point statistics of one attack on one split; (summary, per-point)."""
    per_point = {"point_auc": point_auc(positive, negative),
                 "point_balanced_accuracy": point_balanced_accuracy(positive, negative)}
    summary = {"folds": n_folds, "variance": variance, "n_positive": int(positive.size),
               "n_negative": int(negative.size)} | roc_summary(positive, negative)
    summary |= {"point_auc_mean": float(per_point["point_auc"].mean()),
                "point_auc_p95": float(np.percentile(per_point["point_auc"], 95)),
                "point_balanced_accuracy_mean":
                    float(per_point["point_balanced_accuracy"].mean()),
                "zero_std_points": zero_std_points}
    return summary, per_point


# --- one (forget set, setting): per point and per split ---------------------------------------


def scored_points(splits, options: PrivacyOptions) -> np.ndarray:
    """Sorted indices of the points scored: every forget point, a seeded subset elsewhere."""
    splits = np.asarray(splits)
    chosen = []
    for split in SPLITS:
        where = np.flatnonzero(splits == split)
        if split != "forget" and len(where) > options.max_points:
            rng = np.random.default_rng([options.subset_seed, SPLITS.index(split)])
            where = np.sort(rng.choice(where, options.max_points, replace=False))
        chosen.append(where)
    return np.sort(np.concatenate(chosen))


def top1_accuracy(logits, labels, splits) -> dict:
    """Mean over models of each split's top-1 accuracy (argmax of the logits == label).

    logits [n_models, n_points, n_classes] of finite models; returns {split: value}.
    """
    correct = np.argmax(np.asarray(logits), axis=2) == np.asarray(labels)[None, :]
    splits = np.asarray(splits)
    return {split: float(correct[:, splits == split].mean()) if (splits == split).any()
            else np.nan for split in SPLITS}


def margin_accuracy(margins, splits) -> dict:
    """Mean over models of each split's accuracy read as margin > 0 (a lower bound of top-1)."""
    correct = np.asarray(margins) > 0
    splits = np.asarray(splits)
    return {split: float(correct[:, splits == split].mean()) if (splits == split).any()
            else np.nan for split in SPLITS}


def _finite_rows(margins):
    margins = np.asarray(margins)
    finite = np.isfinite(margins).all(axis=1)
    return margins[finite], np.flatnonzero(finite)


def privacy_points(tested, oracle, original, splits, options: PrivacyOptions = PrivacyOptions(),
                   threads: int = 1):
    """Every metric of one sample under test against the scored oracles.

    tested: margins [n_models, n_points] of the method's models (or the
    held-out oracles for the reference row), row k started from original k;
    oracle: the scored oracles; original: the originals (LiRA's IN shadows);
    splits [n_points]: forget / retain / val. Diverged rows (NaN/inf) of the
    tested sample are dropped and counted.

    Returns (per-point table as a dict of columns over the scored points,
    {split: summary dict}, counts dict).
    """
    tested_phi, tested_index = _finite_rows(tested)
    oracle_phi, oracle_index = _finite_rows(oracle)
    original_phi, original_index = _finite_rows(original)
    if len(oracle_index) < len(oracle):
        raise ValueError("oracle margins hold NaN or infinite values: the oracles are broken")
    tested_phi, oracle_phi, original_phi = (logit_scaled_confidence(m) for m in
                                            (tested_phi, oracle_phi, original_phi))
    splits = np.asarray(splits)
    points = scored_points(splits, options)
    n_tested, n_oracle = len(tested_index), len(oracle_index)
    counts = {"n_unlearned": n_tested, "n_oracle": n_oracle,
              "n_diverged": int(len(tested) - n_tested)}
    columns = {"point": points, "split": splits[points]}
    summaries = {split: {"n_points": int((splits[points] == split).sum())} for split in SPLITS}
    reason = None
    if min(n_tested, n_oracle) < MIN_MODELS:
        reason = (f"{n_tested} finite models under test and {n_oracle} oracles: "
                  f"the metrics need at least {MIN_MODELS} on each side")
    counts["reason"] = reason
    if "competition" in options.metrics:
        _competition(columns, summaries, tested_phi, oracle_phi, points, splits, options, reason,
                     threads)
    n_models = min(len(tested), len(oracle), len(original))
    n_folds = min(options.folds, n_models)
    lira_reason = reason
    if lira_reason is None and min(n_tested, n_oracle, len(original_index)) < MIN_MODELS:
        lira_reason = f"fewer than {MIN_MODELS} finite originals"
    for attack in ("ulira", "lira"):
        if attack not in options.metrics:
            continue
        if attack == "ulira":
            in_shadows, in_index = tested_phi, tested_index
        else:
            in_shadows, in_index = original_phi, original_index
        _lira(columns, summaries, attack, tested_phi[:, points], tested_index,
              in_shadows[:, points], in_index, oracle_phi[:, points], oracle_index,
              splits[points], n_folds, options.variance, lira_reason)
    return columns, summaries, counts


def _competition(columns, summaries, tested, oracle, points, splits, options, reason, threads):
    epsilon = np.full(len(points), np.nan)
    range_rule = np.zeros(len(points), dtype=bool)
    if reason is None:
        epsilon, range_rule = competition_epsilon(tested[:, points], oracle[:, points], options,
                                                  threads=threads)
    bucket = bucket_points(epsilon, len(tested))
    columns["competition_epsilon"] = epsilon
    columns["competition_points"] = bucket
    limit = max_epsilon(len(tested))
    for split in SPLITS:
        mine = splits[points] == split
        values = epsilon[mine]
        empty = reason is not None or not mine.any()
        summaries[split] |= {
            "competition_delta": options.delta,
            "competition_max_epsilon": limit,
            "competition_epsilon_mean": np.nan if empty else float(values.mean()),
            "competition_epsilon_p50": np.nan if empty else float(np.percentile(values, 50)),
            "competition_epsilon_p95": np.nan if empty else float(np.percentile(values, 95)),
            "competition_capped_fraction": np.nan if empty else float((values >= limit).mean()),
            "competition_range_rule_fraction": np.nan if empty else float(range_rule[mine].mean()),
            "competition_forget_quality": np.nan if empty else float(bucket[mine].mean()),
        }


def _lira(columns, summaries, attack, targets, target_index, in_shadows, in_index, oracle,
          oracle_index, splits, n_folds, variance, reason):
    n_points = targets.shape[1]
    for name in ("point_auc", "point_balanced_accuracy"):
        columns[f"{attack}_{name}"] = np.full(n_points, np.nan)
    for split in SPLITS:
        mine = splits == split
        summary = {"folds": n_folds, "variance": variance}
        # LiRA asks "does x still look trained-on?": defined on forget points only.
        if reason is None and mine.any() and (attack == "ulira" or split == "forget"):
            summary, per_point = lira_summary(
                *lira_scores(targets[:, mine], target_index, in_shadows[:, mine], in_index,
                             oracle[:, mine], oracle_index, n_folds, variance),
                n_folds, variance)
            for name, values in per_point.items():
                columns[f"{attack}_{name}"][mine] = values
        summaries[split] |= {f"{attack}_{name}": summary.get(name, np.nan)
                             for name in LIRA_COLUMNS}


LIRA_COLUMNS = ("folds", "variance", "n_positive", "n_negative", "auc", "balanced_accuracy",
                "tpr_at_fpr_1pct", "tpr_at_fpr_0p1pct", "point_auc_mean", "point_auc_p95",
                "point_balanced_accuracy_mean", "zero_std_points")


def utility_columns(accuracy_tested: dict, accuracy_oracle: dict, definition: str) -> dict:
    """The competition's accuracy ratios: retain (RA_U/RA_R) and test = val (TA_U/TA_R)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"competition_retain_accuracy_ratio":
                float(np.float64(accuracy_tested["retain"]) / accuracy_oracle["retain"]),
                "competition_val_accuracy_ratio":
                float(np.float64(accuracy_tested["val"]) / accuracy_oracle["val"]),
                "competition_accuracy_definition": definition}


def summary_rows(summaries: dict, counts: dict, identity: dict, utility: dict | None,
                 options: PrivacyOptions) -> list:
    """One row per split; the competition score = F x the two accuracy ratios, forget rows only."""
    rows = []
    for split in SPLITS:
        row = identity | {"split": split} | {k: counts[k] for k in
                                             ("n_unlearned", "n_oracle", "n_diverged")}
        row = row | {"n_points": summaries[split]["n_points"], "reason": counts["reason"]}
        row |= {k: v for k, v in summaries[split].items() if k != "n_points"}
        if "competition" in options.metrics:
            row |= utility or {}
            quality = row.get("competition_forget_quality", np.nan)
            row["competition_score"] = (
                quality * row["competition_retain_accuracy_ratio"]
                * row["competition_val_accuracy_ratio"]
                if split == "forget" and utility else np.nan)
        rows.append(row)
    return rows
