"""One (forget set, setting): every metric per point and per split, and the summary rows.
"""

from __future__ import annotations

import numpy as np

from klomflow.metrics.privacy.competition import bucket_points, competition_epsilon, max_epsilon
from klomflow.metrics.privacy.lira import (
    lira_scores,
    lira_summary,
)
from klomflow.metrics.privacy.options import (
    DEFAULT_OPTIONS,
    MIN_MODELS,
    SPLITS,
    PrivacyOptions,
    logit_scaled_confidence,
)

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


def privacy_points(tested, oracle, original, splits, options: PrivacyOptions = DEFAULT_OPTIONS,
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
