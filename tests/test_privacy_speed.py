"""The competition epsilon's searches (klomflow/metrics/privacy/) against the computations they
replaced (tests/privacy_grid.py): the double-threshold family's candidate pairs against the full
grid search, the single-threshold family's sorted counts against pairwise comparison; equal bit for
bit."""

import numpy as np
import pytest
from privacy_grid import (
    double_threshold_epsilon_grid,
    grid_search,
    single_threshold_epsilon_pairwise,
)

from klomflow.metrics import privacy
from klomflow.metrics.privacy import competition
from klomflow.metrics.privacy.competition import competition_epsilon
from klomflow.metrics.privacy.options import PrivacyOptions
from klomflow.metrics.privacy.points import privacy_points

DEFAULT = PrivacyOptions()


def chunk_inputs(u, o, options=DEFAULT):
    """What _epsilon_chunk hands the double-threshold search: sorted samples, Q, table, floor."""
    u, o = np.sort(u.T, axis=1), np.sort(o.T, axis=1)
    n_u, n_o = u.shape[1], o.shape[1]
    table = np.concatenate([privacy.epsilon_table(n_u, n_o, options.delta).ravel(),
                            privacy.epsilon_table(n_o, n_u, options.delta).T.ravel()])
    o_positive = np.median(o, axis=1) > np.median(u, axis=1)
    range_u, range_o = u[:, -1] - u[:, 0], o[:, -1] - o[:, 0]
    range_p = np.where(o_positive, range_o, range_u)
    range_n = np.where(o_positive, range_u, range_o)
    q_is_u = np.where(range_p >= range_n, o_positive, ~o_positive)
    single = competition._single_threshold_epsilon(u, o, ~o_positive, table, n_u, n_o,
                                               options.thresholds_per_unit)
    pairwise = single_threshold_epsilon_pairwise(u, o, ~o_positive, table, n_u, n_o,
                                                 options.thresholds_per_unit)
    np.testing.assert_array_equal(single, pairwise)
    return u, o, q_is_u, table, n_u, n_o, single


def assert_same_double(u, o, options=DEFAULT, floors=None):
    """The new search equals the grid's best eps wherever that exceeds the floor; -inf elsewhere."""
    u, o, q_is_u, table, n_u, n_o, single = chunk_inputs(u, o, options)
    grid = double_threshold_epsilon_grid(u, o, q_is_u, table, n_u, n_o,
                                         options.thresholds_per_unit, options.buffer)
    for floor in floors or (np.maximum(single, 0.0), np.full(len(u), -np.inf)):
        # A tiny block size also runs the blocked path.
        for block in (1 << 21, 1):
            new = competition._double_threshold_epsilon(u, o, q_is_u, table, n_u, n_o,
                                                    options.thresholds_per_unit, options.buffer,
                                                    floor, pairs_per_block=block)
            expected = np.where(grid > floor, grid, -np.inf)
            np.testing.assert_array_equal(new, expected)


def assert_same_epsilon(u, o, options=DEFAULT, chunk=16):
    new = competition_epsilon(u, o, options, chunk=chunk)
    with grid_search():
        old = competition_epsilon(u, o, options, chunk=chunk)
    np.testing.assert_array_equal(new[0], old[0])
    np.testing.assert_array_equal(new[1], old[1])


def random_margins(rng, n_u, n_o, n_points, kind):
    mean, scale = rng.normal(0, 3, n_points), rng.uniform(0.05, 3, n_points)
    u = rng.normal(mean + rng.normal(0, 1, n_points), scale * rng.uniform(0.3, 2, n_points),
                   (n_u, n_points))
    o = rng.normal(mean, scale, (n_o, n_points))
    if kind == "rounded":  # ties within and across the samples
        u, o = np.round(u, 1), np.round(o, 1)
    elif kind == "discrete":  # a few values only
        u, o = np.round(u / 2) * 0.5, np.round(o / 2) * 0.5
    elif kind == "grid":  # values on the 0.01 threshold grid and its edges
        u, o = np.round(u, 2), np.round(o, 2)
    elif kind == "constant":  # constant samples (range rule, equal and different constants)
        u[:, ::3] = 1.5
        o[:, ::4] = 1.5
        o[:, 1::5] = 2.5
    elif kind == "wide":
        u, o = u * 10, o * 10
    elif kind == "narrow":
        u, o = u * 0.02 + 0.3, o * 0.02 + 0.3
    elif kind == "separated":
        u = u + 8
    return u, o


KINDS = ("normal", "rounded", "discrete", "grid", "constant", "wide", "narrow", "separated")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_u, n_o", [(3, 3), (4, 9), (10, 10), (25, 64), (64, 25), (100, 100)])
def test_candidate_search_equals_the_grid_search(kind, n_u, n_o):
    rng = np.random.default_rng([n_u, n_o, KINDS.index(kind)])
    u, o = random_margins(rng, n_u, n_o, 24, kind)
    assert_same_double(u, o)
    assert_same_epsilon(u, o, chunk=7)


@pytest.mark.parametrize("options", [
    PrivacyOptions(thresholds_per_unit=37, buffer=0.7),
    PrivacyOptions(thresholds_per_unit=150, buffer=1.5, delta=1e-3),
    PrivacyOptions(buffer=0.005),  # one left edge per right edge
    PrivacyOptions(thresholds_per_unit=1),
    PrivacyOptions(thresholds_per_unit=3, buffer=0.1),
    PrivacyOptions(buffer=4.0),
])
def test_candidate_search_with_other_options(options):
    rng = np.random.default_rng(20)
    for n_u, n_o in ((1, 1), (2, 5), (30, 20)):
        for kind in ("normal", "rounded", "constant", "narrow"):
            u, o = random_margins(rng, n_u, n_o, 10, kind)
            assert_same_double(u, o, options)
            assert_same_epsilon(u, o, options, chunk=3)


def test_candidate_search_at_every_floor():
    """Floors between the grid's table values: each exact value is kept or dropped correctly."""
    rng = np.random.default_rng(21)
    u, o = random_margins(rng, 20, 20, 16, "normal")
    grid_inputs = chunk_inputs(u, o)
    u_s, o_s, q_is_u, table, n_u, n_o, _ = grid_inputs
    grid = double_threshold_epsilon_grid(u_s, o_s, q_is_u, table, n_u, n_o, 100, 2.0)
    floors = [grid, np.nextafter(grid, -np.inf), np.full(16, 0.5), np.full(16, np.inf)]
    assert_same_double(u, o, floors=floors)


def test_privacy_points_are_unchanged():
    """Every per-point column and summary of a setting equals the grid search's."""
    rng = np.random.default_rng(23)
    u, o = random_margins(rng, 40, 40, 90, "rounded")
    original = u + rng.normal(1, 0.5, u.shape)
    splits = np.array(["forget"] * 30 + ["retain"] * 40 + ["val"] * 20)
    options = PrivacyOptions(max_points=25)
    new = privacy_points(u, o, original, splits, options)
    with grid_search():
        old = privacy_points(u, o, original, splits, options)
    assert new[0].keys() == old[0].keys()
    for name in new[0]:
        np.testing.assert_array_equal(new[0][name], old[0][name])
    for split in new[1]:
        assert new[1][split].keys() == old[1][split].keys()
        for name, value in new[1][split].items():
            both_nan = value != value and old[1][split][name] != old[1][split][name]
            assert value == old[1][split][name] or both_nan, name
    assert new[2] == old[2]
