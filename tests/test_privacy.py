"""Privacy metrics (klomflow/metrics/privacy/): the cases of ../shared/PRIVACY.md A.8 and B.5."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm

from klomflow.metrics import privacy
from klomflow.metrics.privacy.competition import (
    bucket_points,
    competition_epsilon,
    epsilon_one_point_reference,
)
from klomflow.metrics.privacy.lira import fold_parameters
from klomflow.metrics.privacy.options import PrivacyOptions
from klomflow.metrics.privacy.points import privacy_points, summary_rows, utility_columns


def one_point(u, o):
    """Column vectors: N models, one point."""
    return np.asarray(u, dtype=np.float64)[:, None], np.asarray(o, dtype=np.float64)[:, None]


def forget_only(n_points):
    return np.array(["forget"] * n_points)


def competition_row(u, o, retain_ratio=1.0, val_ratio=1.0):
    """The forget row of a competition-only evaluation of margins u, o (all points forget)."""
    options = PrivacyOptions(metrics=("competition",))
    _, summaries, counts = privacy_points(u, o, u, forget_only(u.shape[1]), options)
    utility = utility_columns({"retain": retain_ratio, "val": val_ratio},
                              {"retain": 1.0, "val": 1.0}, "top1")
    rows = summary_rows(summaries, counts, {}, utility, options)
    return next(row for row in rows if row["split"] == "forget")


# --- A.8: the competition --------------------------------------------------------------------


def test_identical_samples_score_one():
    """A.8.1: u = o as multisets at every point: eps = 0, F = 1, score = 1."""
    rng = np.random.default_rng(0)
    base = np.linspace(-1, 1, 10)
    u = np.stack([rng.permutation(base) for _ in range(4)], axis=1)
    o = np.stack([rng.permutation(base) for _ in range(4)], axis=1)
    epsilon, _ = competition_epsilon(u, o)
    np.testing.assert_array_equal(epsilon, 0.0)
    row = competition_row(u, o)
    assert row["competition_forget_quality"] == 1.0
    assert row["competition_score"] == 1.0


def test_shifted_samples_give_the_published_epsilon():
    """A.8.2: u = 0..9, o = 5..14: eps = ln(0.6 - 1e-5) - ln(0.1), H = F = 0.125, score 0.09."""
    u, o = one_point(np.arange(10), np.arange(5, 15))
    epsilon, range_rule = competition_epsilon(u, o)
    assert epsilon[0] == pytest.approx(math.log(0.6 - 1e-5) - math.log(0.1), abs=1e-12)
    assert epsilon[0] == pytest.approx(1.7917428, abs=1e-7)
    assert not range_rule[0]
    row = competition_row(u, o, retain_ratio=0.9, val_ratio=0.8)
    assert row["competition_max_epsilon"] == 3
    assert row["competition_forget_quality"] == 0.125
    assert row["competition_score"] == pytest.approx(0.09, abs=1e-15)


def test_perfect_separation_is_capped():
    """A.8.3: u = 0..9, o = 20..29: eps = 50, H = 0, F = 0."""
    u, o = one_point(np.arange(10), np.arange(20, 30))
    epsilon, range_rule = competition_epsilon(u, o)
    assert epsilon[0] == 50.0 and not range_rule[0]
    assert competition_row(u, o)["competition_forget_quality"] == 0.0


def test_a_constant_sample_triggers_the_range_rule():
    """A.8.4: u all 3.0, o = 0..9: eps = 50 by the range rule, H = 0."""
    u, o = one_point(np.full(10, 3.0), np.arange(10))
    epsilon, range_rule = competition_epsilon(u, o)
    assert epsilon[0] == 50.0 and range_rule[0]
    assert bucket_points(epsilon, 10)[0] == 0.0


def test_equal_constants_give_zero_and_different_constants_fifty():
    """A.5: no surviving threshold gives 0 (the scorer's assertion fails there); two
    different constants separate perfectly."""
    epsilon, _ = competition_epsilon(np.full((10, 2), 1.5), np.array([[1.5, 2.5]] * 10))
    np.testing.assert_array_equal(epsilon, [0.0, 50.0])


def test_bucket_points():
    """A.8.5: H at N = 100 and N = 512; N = 2 gives a NaN row with a reason."""
    values = bucket_points([0, 0.4999, 0.5, 4.9999, 5, 50], 100)
    np.testing.assert_array_equal(values, [1, 1, 0.5, 2.0 ** -9, 0, 0])
    assert bucket_points([6.5], 512)[0] == 2.0 ** -13
    assert np.isnan(bucket_points([0.0], 2)[0])
    u, o = one_point([0.0, 1.0], [0.5, 2.0])
    row = competition_row(u, o)
    assert np.isnan(row["competition_forget_quality"]) and "at least 3" in row["reason"]


def test_null_floor_is_far_below_one():
    """A.8.6: u, o i.i.d. N(0, 1), N = 100, 200 points: F = 0.18 +- 0.04."""
    rng = np.random.default_rng(1)
    u, o = rng.normal(size=(100, 200)), rng.normal(size=(100, 200))
    quality = competition_row(u, o)["competition_forget_quality"]
    assert quality == pytest.approx(0.18, abs=0.04)


def test_vectorised_epsilon_matches_the_literal_transcription():
    """A.8.7: the fast path (sorted counts, grid positions, a table lookup) equals the
    threshold-by-threshold transcription, with unequal sizes and 0.1-rounded ties."""
    rng = np.random.default_rng(2)
    for n_u, n_o, rounded in ((10, 10, True), (25, 64, False), (64, 25, True), (10, 25, False)):
        shift = rng.normal(size=6) * np.array([0, 0.5, 2, 0, 1, 3])
        scale = np.array([0.3, 1, 3, 1, 0.5, 2])
        u = rng.normal(shift, scale, size=(n_u, 6))
        o = rng.normal(size=(n_o, 6))
        if rounded:
            u, o = np.round(u, 1), np.round(o, 1)
        fast, _ = competition_epsilon(u, o, chunk=4)
        literal = [epsilon_one_point_reference(u[:, i], o[:, i]) for i in range(6)]
        np.testing.assert_allclose(fast, literal, rtol=0, atol=1e-9)


def test_threads_do_not_change_epsilon():
    rng = np.random.default_rng(3)
    u, o = rng.normal(0.3, 1, size=(20, 40)), rng.normal(size=(20, 40))
    one, _ = competition_epsilon(u, o, chunk=8)
    two, _ = competition_epsilon(u, o, chunk=8, threads=2)
    np.testing.assert_array_equal(one, two)


def test_statistic_is_the_margin():
    """phi from a margin equals the margin to 2e-6 up to |m| = 90 and saturates at 103.616."""
    margins = np.linspace(-90, 90, 1001)
    np.testing.assert_allclose(privacy.logit_scaled_confidence(margins), margins, atol=2e-6)
    assert privacy.logit_scaled_confidence([500.0])[0] == pytest.approx(103.616, abs=1e-3)


# --- B.5: LiRA and U-LiRA ---------------------------------------------------------------------


def attack_row(tested, oracle, original=None, split="forget", **options):
    options = PrivacyOptions(metrics=("ulira", "lira"), **options)
    original = tested if original is None else original
    points, summaries, counts = privacy_points(tested, oracle, original,
                                               np.array([split] * tested.shape[1]), options)
    return summaries[split], points


def test_identical_samples_give_chance():
    """B.5.1: U = O (the same array): every score 0, auc = balanced accuracy = 0.5, TPRs 0."""
    rng = np.random.default_rng(4)
    margins = rng.normal(size=(20, 30))
    row, _ = attack_row(margins, margins)
    assert row["ulira_auc"] == 0.5 and row["ulira_balanced_accuracy"] == 0.5
    assert row["ulira_tpr_at_fpr_1pct"] == 0 and row["ulira_tpr_at_fpr_0p1pct"] == 0


def test_separated_samples_are_found():
    """B.5.2: U ~ N(5, 1), O ~ N(-5, 1), N = 50, 200 points."""
    rng = np.random.default_rng(5)
    row, _ = attack_row(rng.normal(5, 1, (50, 200)), rng.normal(-5, 1, (50, 200)))
    assert row["ulira_auc"] >= 0.999 and row["ulira_tpr_at_fpr_0p1pct"] >= 0.99


def test_closed_form_for_a_mean_shift():
    """B.5.3: U ~ N(1, 1), O ~ N(0, 1), N = 400, 500 points."""
    rng = np.random.default_rng(6)
    row, _ = attack_row(rng.normal(1, 1, (400, 500)), rng.normal(0, 1, (400, 500)))
    assert row["ulira_auc"] == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.005)
    assert row["ulira_auc"] == pytest.approx(0.7602, abs=0.005)
    assert row["ulira_balanced_accuracy"] == pytest.approx(0.6915, abs=0.005)
    assert row["ulira_tpr_at_fpr_1pct"] == pytest.approx(0.0924, abs=0.01)
    assert row["ulira_tpr_at_fpr_0p1pct"] == pytest.approx(0.0183, abs=0.005)


def test_closed_form_for_a_variance_change():
    """B.5.4: U ~ N(0, 1), O ~ N(0, 2): only a two-sided likelihood ratio sees this."""
    rng = np.random.default_rng(7)
    row, _ = attack_row(rng.normal(0, 1, (400, 500)), rng.normal(0, 2, (400, 500)))
    assert row["ulira_auc"] == pytest.approx(2 / np.pi * np.arctan(2), abs=0.005)
    assert row["ulira_auc"] == pytest.approx(0.7048, abs=0.005)
    assert row["ulira_balanced_accuracy"] == pytest.approx(0.6613, abs=0.005)


def test_no_model_is_both_shadow_and_target():
    """B.5.5: changing fold f's rows leaves fold f's fitted Gaussians unchanged."""
    rng = np.random.default_rng(8)
    shadows = rng.normal(size=(20, 7))
    index = np.arange(20)
    for fold in range(5):
        changed = shadows.copy()
        changed[index % 5 == fold] += rng.normal(size=(4, 7)) * 100
        for before, after in zip(fold_parameters(shadows, index, fold, 5),
                                 fold_parameters(changed, index, fold, 5)):
            np.testing.assert_array_equal(before, after)
        other = (fold + 1) % 5
        assert not np.array_equal(fold_parameters(shadows, index, other, 5)[0],
                                  fold_parameters(changed, index, other, 5)[0])


def test_fold_rows_change_only_their_own_scores():
    """B.5.5 end to end: fold 0's targets are scored by Gaussians fitted without fold 0."""
    rng = np.random.default_rng(9)
    tested, oracle = rng.normal(0.5, 1, (10, 12)), rng.normal(size=(10, 12))
    scores, _, _ = privacy.lira_scores(tested, np.arange(10), tested, np.arange(10), oracle,
                                       np.arange(10), 5)
    changed = tested.copy()
    changed[np.arange(10) % 5 == 0] += 3.0
    new_scores, _, _ = privacy.lira_scores(changed, np.arange(10), changed, np.arange(10),
                                           oracle, np.arange(10), 5)
    # Fold 0's Gaussians come from the unchanged folds 1-4; the other folds' fits saw fold 0
    # move, so their scores change.
    in_fold_0 = np.arange(10) % 5 == 0
    mean, std = fold_parameters(tested, np.arange(10), 0, 5)
    out_mean, out_std = fold_parameters(oracle, np.arange(10), 0, 5)
    expected = (norm.logpdf(changed[in_fold_0], mean, std + 1e-30)
                - norm.logpdf(changed[in_fold_0], out_mean, out_std + 1e-30))
    np.testing.assert_allclose(new_scores[in_fold_0], expected, rtol=1e-12, atol=1e-9)
    assert not np.allclose(new_scores[~in_fold_0], scores[~in_fold_0])


def test_doing_nothing_makes_ulira_equal_lira():
    """B.5.5: when the sample under test is the originals, U-LiRA is LiRA exactly."""
    rng = np.random.default_rng(10)
    original, oracle = rng.normal(0.8, 1, (15, 25)), rng.normal(size=(15, 25))
    row, points = attack_row(original, oracle, original=original.copy())
    for name in privacy.LIRA_COLUMNS:
        assert row[f"ulira_{name}"] == row[f"lira_{name}"], name
    np.testing.assert_array_equal(points["ulira_point_auc"], points["lira_point_auc"])


def test_lira_is_defined_on_forget_points_only():
    rng = np.random.default_rng(11)
    row, points = attack_row(rng.normal(size=(10, 5)), rng.normal(size=(10, 5)), split="retain")
    assert np.isnan(row["lira_auc"]) and np.isfinite(row["ulira_auc"])
    assert np.isnan(points["lira_point_auc"]).all()


def test_method_and_reference_rows_sit_at_chance_under_the_null():
    """B.5.6: U, O, H i.i.d. N(0, 1), N = 100, 100 points: both rows give auc 0.50 +- 0.02."""
    rng = np.random.default_rng(12)
    oracle = rng.normal(size=(100, 100))
    for tested in (rng.normal(size=(100, 100)), rng.normal(size=(100, 100))):
        row, _ = attack_row(tested, oracle, original=rng.normal(size=(100, 100)))
        assert row["ulira_auc"] == pytest.approx(0.5, abs=0.02)
        assert row["lira_auc"] == pytest.approx(0.5, abs=0.02)


def test_every_variance_keeps_zero_std_points_finite():
    """B.3: a saturated point (std 0) keeps finite scores, whatever the variance."""
    rng = np.random.default_rng(13)
    tested, oracle = rng.normal(size=(10, 6)), rng.normal(size=(10, 6))
    tested[:, 0] = oracle[:, 0] = 200.0  # phi saturates: both stds are 0
    for variance in privacy.VARIANCES:
        row, points = attack_row(tested, oracle, variance=variance)
        assert row["ulira_zero_std_points"] == 1
        assert np.isfinite(points["ulira_point_auc"]).all()
        assert points["ulira_point_auc"][0] == 0.5


def cross_fitted_scores(targets, in_shadows, out_shadows, n_folds, sigma):
    """LiRA scores restated from plot.py's generate_ours, per fold: medians of the shadows
    outside the fold, sigma(in_rows, out_rows) -> (sigma_in, sigma_out), scipy's logpdf."""
    index = np.arange(len(targets))
    positive, negative = np.empty(targets.shape), np.empty(out_shadows.shape)
    for fold in range(n_folds):
        dat_in, dat_out = in_shadows[index % n_folds != fold], out_shadows[index % n_folds != fold]
        std_in, std_out = sigma(dat_in, dat_out)
        for rows, result in ((targets, positive), (out_shadows, negative)):
            x = rows[index % n_folds == fold]
            result[index % n_folds == fold] = (
                norm.logpdf(x, np.median(dat_in, 0), std_in + 1e-30)
                - norm.logpdf(x, np.median(dat_out, 0), std_out + 1e-30))
    return positive, negative


def variance_case():
    """IN and OUT shadows whose spreads differ per point and between the sides, so that every
    variance choice gives other scores."""
    rng = np.random.default_rng(16)
    tested = rng.normal(0.5, 1, (10, 6)) * np.array([0.5, 1, 2, 1, 3, 1])
    oracle = rng.normal(0, 3, (10, 6)) + np.array([0, 1, 0, 2, 0, 5])
    return tested, oracle


def test_fixed_variance_is_plot_pys():
    """B.2: `fixed` is plot.py's fix_variance: std_in = std_out = np.std(dat_in), one value
    over every IN-shadow entry (all points of the split), used for both sides."""
    tested, oracle = variance_case()
    index = np.arange(10)
    expected = cross_fitted_scores(tested, tested, oracle, 5,
                                   lambda dat_in, dat_out: (np.std(dat_in), np.std(dat_in)))
    positive, negative, _ = privacy.lira_scores(tested, index, tested, index, oracle, index, 5,
                                                variance="fixed")
    np.testing.assert_allclose(positive, expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(negative, expected[1], rtol=1e-12, atol=1e-12)


def test_pooled_variance_and_its_former_name():
    """`pooled`: one sigma per side, the root mean square of the per-point stds; `global`, its
    former name, is still read and recorded as `pooled`."""
    tested, oracle = variance_case()
    index = np.arange(10)

    def pooled(dat_in, dat_out):
        return (np.sqrt(np.mean(np.std(dat_in, 0) ** 2)), np.sqrt(np.mean(np.std(dat_out, 0) ** 2)))

    expected = cross_fitted_scores(tested, tested, oracle, 5, pooled)
    for name in ("pooled", "global"):
        positive, negative, _ = privacy.lira_scores(tested, index, tested, index, oracle, index,
                                                    5, variance=name)
        np.testing.assert_allclose(positive, expected[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(negative, expected[1], rtol=1e-12, atol=1e-12)
    assert PrivacyOptions(variance="global").variance == "pooled"
    row, _ = attack_row(tested, oracle, variance="global")
    assert row["ulira_variance"] == "pooled"
    with pytest.raises(ValueError, match="variance"):
        privacy.lira_scores(tested, index, tested, index, oracle, index, 5, variance="fix")


def test_diverged_rows_are_dropped_and_counted():
    rng = np.random.default_rng(14)
    tested, oracle = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
    tested[3, 2] = np.nan
    _, summaries, counts = privacy_points(tested, oracle, tested, forget_only(8))
    assert counts["n_diverged"] == 1 and counts["n_unlearned"] == 11
    assert np.isfinite(summaries["forget"]["ulira_auc"])
    assert summaries["forget"]["ulira_n_positive"] == 11 * 8


def test_retain_and_val_use_a_seeded_subset():
    splits = np.array(["forget"] * 5 + ["retain"] * 50 + ["val"] * 30)
    options = PrivacyOptions(max_points=20, subset_seed=3)
    chosen = privacy.scored_points(splits, options)
    assert (splits[chosen] == "forget").sum() == 5
    assert (splits[chosen] == "retain").sum() == 20 and (splits[chosen] == "val").sum() == 20
    np.testing.assert_array_equal(chosen, privacy.scored_points(splits, options))


def test_top1_accuracy_differs_from_a_positive_margin():
    """A.4: logits (2, 1.5, 1.5) with label 0 are correct by argmax but have margin < 0."""
    logits = np.array([[[2.0, 1.5, 1.5]]])
    splits = np.array(["retain"])
    assert privacy.top1_accuracy(logits, [0], splits)["retain"] == 1.0
    margin = 2.0 - np.log(2 * np.exp(1.5))
    assert margin < 0
    assert privacy.margin_accuracy(np.array([[margin]]), splits)["retain"] == 0.0


def test_privacy_module_does_not_import_torch():
    code = ("import sys, klomflow.metrics.privacy; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
