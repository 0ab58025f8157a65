"""Privacy-attack metrics from margins alone: the competition's forgetting quality, U-LiRA, LiRA.

Follows docs/privacy.md, which transcribes the released code; where the
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

The code: options.py (names, constants, options), competition.py (A), lira.py (B) and
points.py (one setting, per point and per split); this package exports their public names.
"""

from klomflow.metrics.privacy.competition import (
    NEAR_GRID,
    bucket_points,
    competition_epsilon,
    epsilon_one_point_reference,
    epsilon_table,
    max_epsilon,
)
from klomflow.metrics.privacy.lira import (
    fold_parameters,
    lira_scores,
    lira_summary,
    point_auc,
    point_balanced_accuracy,
    roc_summary,
)
from klomflow.metrics.privacy.options import (
    BUCKET_WIDTH,
    BUFFER,
    DEFAULT_OPTIONS,
    DELTA,
    EPSILON_CAP,
    FEW_MODELS,
    FORMER_VARIANCES,
    METRICS,
    MIN_MODELS,
    RANGE_RATIO,
    SIGMA_FLOOR,
    SPLITS,
    THRESHOLDS_PER_UNIT,
    TPR_FPR_LEVELS,
    VARIANCES,
    VERSION,
    PrivacyOptions,
    logit_scaled_confidence,
)
from klomflow.metrics.privacy.points import (
    LIRA_COLUMNS,
    margin_accuracy,
    privacy_points,
    scored_points,
    summary_rows,
    top1_accuracy,
    utility_columns,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "BUCKET_WIDTH",
    "BUFFER",
    "DELTA",
    "EPSILON_CAP",
    "FEW_MODELS",
    "FORMER_VARIANCES",
    "LIRA_COLUMNS",
    "METRICS",
    "MIN_MODELS",
    "NEAR_GRID",
    "PrivacyOptions",
    "RANGE_RATIO",
    "SIGMA_FLOOR",
    "SPLITS",
    "THRESHOLDS_PER_UNIT",
    "TPR_FPR_LEVELS",
    "VARIANCES",
    "VERSION",
    "bucket_points",
    "competition_epsilon",
    "epsilon_one_point_reference",
    "epsilon_table",
    "fold_parameters",
    "lira_scores",
    "lira_summary",
    "logit_scaled_confidence",
    "margin_accuracy",
    "max_epsilon",
    "point_auc",
    "point_balanced_accuracy",
    "privacy_points",
    "roc_summary",
    "scored_points",
    "summary_rows",
    "top1_accuracy",
    "utility_columns",
]
