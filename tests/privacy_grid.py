"""The competition's epsilon families as klomflow/metrics/privacy/ computed them before it searched
only the candidate count pairs (the reference of tests/test_privacy_speed.py and of
benchmarks/privacy.py).

Double threshold: every (right edge, left edge) threshold is counted, from a histogram of the
samples' grid positions over (point, k, J) cumulated over J, with one table lookup per
threshold. Single threshold: each candidate's counts by comparison with every grid position.
"""

import math
from contextlib import contextmanager
from unittest import mock

import numpy as np

from klomflow.metrics.privacy import competition
from klomflow.metrics.privacy.competition import _grid_position, _grid_value


def double_threshold_epsilon_grid(u, o, q_is_u, table, n_u, n_o, per_unit, buffer):
    """Best eps of the double-threshold family over the whole grid: predict Q when l <= phi <= r.

    Right edges r_k = linspace(lo, hi, ceil((hi - lo) * per_unit)) with
    lo = Q.min() + w - buffer, hi = Q.max() + buffer (w the smaller range); for
    each r_k, ceil(2 * buffer * per_unit) left edges linspace(r_k - w - buffer,
    r_k - w + buffer). Counts in [l, r] are #(x <= r) - #(x < l), clipped at 0
    for l > r; #(x < l) over all left edges from each sample's grid position.
    """
    c = len(u)
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
    left_start = (right - width[:, None]) - buffer
    left_stop = (right - width[:, None]) + buffer
    n_k = right.shape[1]
    cells = np.arange(c * n_k).reshape(c, n_k, 1) * (n_left + 1)
    bins = c * n_k * (n_left + 1)

    def below_left(sample):
        """Histogram over (point, k, J) with J = #{j: l_kj <= x}: x < l_kj exactly when j >= J."""
        position = _grid_position(sample[:, None, :], left_start[:, :, None],
                                  left_stop[:, :, None], n_left)
        return np.bincount((cells + position).ravel(), minlength=bins)

    def at_most_right(sample):
        return (sample[:, None, :] <= right[:, :, None]).sum(axis=2)

    # Both samples' counts in one integer, count_u * (n_o + 1) + count_o (the table's layout):
    # #(l <= x <= r) = #(x <= r) - #(x < l).
    histogram = (below_left(u) * (n_o + 1) + below_left(o)).reshape(c, n_k, n_left + 1)
    below = np.cumsum(histogram[:, :, :n_left], axis=2, dtype=np.int32)
    index = (at_most_right(u) * (n_o + 1) + at_most_right(o)).astype(np.int32)[:, :, None] - below
    # Where l > r both differences are <= 0 (x <= r implies x < l): the empty interval, counts
    # (0, 0), a discarded threshold. Padded right edges (k >= n_right) repeat the last one.
    np.maximum(index, 0, out=index)
    index += np.where(q_is_u, 0, (n_u + 1) * (n_o + 1)).astype(np.int32)[:, None, None]
    return table[index.reshape(c, -1)].max(axis=1)


def single_threshold_epsilon_pairwise(u, o, u_positive, table, n_u, n_o, per_unit):
    """Best eps of the single-threshold family, each candidate's counts by comparing it with
    every sample's grid position (as klomflow/metrics/privacy/ computed it before it searched)."""
    low = np.minimum(u[:, 0], o[:, 0])
    high = np.maximum(u[:, -1], o[:, -1])
    num = np.ceil((high - low) * per_unit).astype(np.int64)
    k_u = _grid_position(u, low[:, None], high[:, None], num[:, None])
    k_o = _grid_position(o, low[:, None], high[:, None], num[:, None])
    candidates = np.concatenate([np.zeros((len(u), 1), dtype=np.int64), k_u, k_o], axis=1)
    valid = candidates < num[:, None]
    count_u = (k_u[:, None, :] > candidates[:, :, None]).sum(axis=2)
    count_o = (k_o[:, None, :] > candidates[:, :, None]).sum(axis=2)
    offset = np.where(u_positive, 0, (n_u + 1) * (n_o + 1))[:, None]
    values = table[offset + count_u * (n_o + 1) + count_o]
    return np.where(valid, values, -np.inf).max(axis=1)


@contextmanager
def grid_search():
    """Within the block, klomflow.metrics.privacy computes both families as before: the
    double-threshold one by the full grid search, the single-threshold one pairwise
    (single-threaded use only: it patches the module)."""

    def full(u, o, q_is_u, table, n_u, n_o, per_unit, buffer, floor):
        return double_threshold_epsilon_grid(u, o, q_is_u, table, n_u, n_o, per_unit, buffer)

    with (mock.patch.object(competition, "_double_threshold_epsilon", full),
          mock.patch.object(competition, "_single_threshold_epsilon",
                            single_threshold_epsilon_pairwise)):
        yield
