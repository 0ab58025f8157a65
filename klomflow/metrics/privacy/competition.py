"""(A) The NeurIPS 2023 unlearning competition's per-example epsilon, its bucket scores and
the largest epsilon N models can show.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from klomflow.metrics.privacy.options import (
    BUCKET_WIDTH,
    DEFAULT_OPTIONS,
    DELTA,
    MIN_MODELS,
    RANGE_RATIO,
    PrivacyOptions,
)

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


def competition_epsilon(unlearned, oracle, options: PrivacyOptions = DEFAULT_OPTIONS,
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


def epsilon_one_point_reference(u, o, options: PrivacyOptions = DEFAULT_OPTIONS) -> float:
    """eps of one point, transcribed threshold by threshold from docs/privacy.md (for the tests)."""
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


