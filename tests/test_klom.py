"""KLOM against KLOM.md: hand-computed cases, the literal reference, the noise floor."""

import numpy as np
import pytest

from klomflow.metrics.klom import (
    KlomOptions,
    average_95,
    finite_models,
    klom_one_point_reference,
    klom_per_point,
    mean_shift_over_std,
    summarise,
)

LN2 = np.log(2)


def one(u, o, **options):
    value = klom_per_point(np.array(u, float)[:, None], np.array(o, float)[:, None],
                           KlomOptions(**options))[0]
    assert value == pytest.approx(
        klom_one_point_reference(u, o, KlomOptions(**options)), abs=1e-12
    )
    return value


# u = [0, 1, 2], o = [0, 0, 2], 2 bins: edges [0, 1, 2].
# reference binning drops samples equal to hi = 2: p = [1/2, 1/2], q = [1, 0].
# inclusive binning keeps them: p = [1/3, 2/3], q = [2/3, 1/3].
@pytest.mark.parametrize(
    "binning, direction, expected",
    [
        ("reference", "unlearned_to_oracle", 0.5 * np.log(0.5) + 0.5 * np.log(0.5 / 1e-5)),
        ("reference", "oracle_to_unlearned", 1.0 * np.log(1 / 0.5)),
        ("inclusive", "unlearned_to_oracle", LN2 / 3),
        ("inclusive", "oracle_to_unlearned", LN2 / 3),
    ],
)
def test_hand_computed_case(binning, direction, expected):
    value = one([0, 1, 2], [0, 0, 2], bins=2, binning=binning, direction=direction)
    assert value == pytest.approx(expected, rel=1e-12)


def test_directions_differ_on_asymmetric_case():
    forward = one([0, 1, 2, 3], [0, 0, 0, 3], bins=3)
    backward = one([0, 1, 2, 3], [0, 0, 0, 3], bins=3, direction="oracle_to_unlearned")
    assert forward != pytest.approx(backward)


def test_identical_constant_samples_score_zero():
    # hi <= lo: hi becomes lo + 1 and every sample falls in the first bin.
    assert one([3.0, 3.0], [3.0, 3.0]) == 0.0


def test_disjoint_samples_saturate_at_log_one_over_eps():
    # The oracle samples sit on hi and are dropped (reference binning): q = 0 -> eps.
    assert one([0.0] * 10, [10.0] * 10) == pytest.approx(np.log(1 / 1e-5))
    assert one([0.0] * 10, [10.0] * 10, binning="inclusive") == pytest.approx(np.log(1e5))


def test_clip_bounds_the_range():
    # Beyond +-clip both samples collapse to the clip value: identical distributions.
    assert one([200.0, 300.0], [150.0, 400.0], clip=100.0) == 0.0
    assert one([200.0, 300.0], [150.0, 400.0], clip=1000.0) > 0


def test_eps_floor_is_used():
    small = one([0.0] * 10, [10.0] * 10, eps=1e-3)
    assert small == pytest.approx(np.log(1e3))


@pytest.mark.parametrize("binning", ["reference", "inclusive"])
@pytest.mark.parametrize("direction", ["unlearned_to_oracle", "oracle_to_unlearned"])
def test_vectorised_matches_literal_reference(binning, direction):
    rng = np.random.default_rng(1)
    n_points = 300
    unlearned = rng.normal(0, 1, (25, n_points)) + rng.normal(0, 2, n_points)
    oracle = rng.normal(0.5, 1.5, (30, n_points))
    # Ties, values on the edges and beyond the clip.
    unlearned[:, :20] = np.round(unlearned[:, :20])
    oracle[:, :20] = np.round(oracle[:, :20])
    unlearned[:, 20:25] = 150.0
    oracle[:, 25:30] = -150.0
    options = KlomOptions(binning=binning, direction=direction, bins=7)
    fast = klom_per_point(unlearned, oracle, options, chunk=64)
    slow = [klom_one_point_reference(unlearned[:, i], oracle[:, i], options)
            for i in range(n_points)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_models, expected_mean, expected_p95",
                         [(50, 0.85, 1.69), (100, 0.34, 0.66)])
def test_same_distribution_gives_the_published_noise_floor(n_models, expected_mean,
                                                           expected_p95):
    # KLOM.md's same-Gaussian simulation: our definition must reproduce its figures.
    rng = np.random.default_rng(0)
    values = klom_per_point(rng.normal(size=(n_models, 4000)), rng.normal(size=(n_models, 4000)))
    assert values.mean() == pytest.approx(expected_mean, rel=0.1)
    assert np.percentile(values, 95) == pytest.approx(expected_p95, rel=0.1)


def test_summary_statistics_use_linear_percentiles():
    values = np.arange(101, dtype=float)
    summary = summarise(values)
    assert summary["klom_p95"] == 95.0 and summary["klom_p50"] == 50.0
    assert summary["klom_mean"] == 50.0
    assert summary["klom_std"] == pytest.approx(values.std())
    assert average_95({"forget": 3.0, "retain": 1.0, "val": 2.0}) == 2.0


def test_diverged_rows_are_detected():
    margins = np.ones((3, 4))
    margins[1, 2] = np.nan
    margins[2, 0] = np.inf
    assert finite_models(margins).tolist() == [True, False, False]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="binning"):
        KlomOptions(binning="histogram")
    with pytest.raises(ValueError, match="direction"):
        KlomOptions(direction="sideways")


def test_mean_shift_over_std_explains_saturation():
    rng = np.random.default_rng(0)
    oracle = rng.normal(0.0, 1.0, size=(400, 3))
    # Point 0 unshifted, point 1 shifted by 0.5 std, point 2 by 6 std.
    unlearned = rng.normal(0.0, 1.0, size=(400, 3)) + np.array([0.0, 0.5, 6.0])
    shift = mean_shift_over_std(unlearned, oracle)
    assert shift[0] < 0.2
    assert shift[1] == pytest.approx(0.5, abs=0.15)
    assert shift[2] == pytest.approx(6.0, abs=0.4)
    # Six stds apart, the histograms are (nearly) disjoint and KLOM is near its ceiling.
    assert klom_per_point(unlearned, oracle)[2] > 5 * klom_per_point(unlearned, oracle)[1]
    # No spread: 0 without a shift, infinite with one.
    flat = np.ones((4, 2))
    np.testing.assert_array_equal(mean_shift_over_std(flat, flat + [0.0, 1.0]), [0.0, np.inf])
