"""(B) LiRA and U-LiRA: per-target likelihood ratios from shadow models' Gaussians, ROC
summaries, per-point AUC and balanced accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from klomflow.metrics.privacy.options import (
    FORMER_VARIANCES,
    SIGMA_FLOOR,
    TPR_FPR_LEVELS,
    VARIANCES,
)

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


