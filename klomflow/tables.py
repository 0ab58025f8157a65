"""From margins to tables: per-point KLOM files and the summary tables.

Accuracy is top-1, read off the logits: a point is classified correctly when
the argmax of its logits is its label. A positive margin means p_y > 1/2,
stricter than top-1 with more than two classes, so margins give accuracy only
where no logits exist, in columns named `*_margin_accuracy`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from klomflow.klom import (
    SPLITS,
    KlomOptions,
    average_95,
    finite_models,
    klom_per_point,
    mean_shift_over_std,
    summarise,
)

# Row name of the noise-floor reference: held-out oracles against the scored oracles.
NOISE_FLOOR = "oracle_holdout"
NOISE_FLOOR_CONFIG_ID = "reference"


def point_splits(n_train: int, n_val: int, forget_indices) -> np.ndarray:
    """Split of every evaluation point: forget, retain (training) or val."""
    splits = np.array(["retain"] * n_train + ["val"] * n_val, dtype=object)
    splits[np.asarray(forget_indices)] = "forget"
    return splits


def klom_points(unlearned_margins, oracle_margins, forget_indices, n_train: int,
                options: KlomOptions) -> tuple[pd.DataFrame, dict]:
    """Per-point KLOM of one (forget set, method setting).

    Models whose margins hold NaN or infinity are diverged runs: they are
    counted and left out. Returns (table of point, split, klom, shift_over_std
    (klomflow.klom.mean_shift_over_std); counts).
    """
    unlearned_margins = np.asarray(unlearned_margins)
    oracle_margins = np.asarray(oracle_margins)
    finite = finite_models(unlearned_margins)
    if not finite_models(oracle_margins).all():
        raise ValueError("oracle margins hold NaN or infinite values: the oracles are broken")
    counts = {"n_unlearned": int(finite.sum()), "n_oracle": len(oracle_margins),
              "n_diverged": int((~finite).sum())}
    n_points = unlearned_margins.shape[1]
    splits = point_splits(n_train, n_points - n_train, forget_indices)
    values, shift = np.full(n_points, np.nan), np.full(n_points, np.nan)
    if finite.sum() > 0:
        values = klom_per_point(unlearned_margins[finite], oracle_margins, options)
    if finite.sum() > 1:  # a std needs two models
        shift = mean_shift_over_std(unlearned_margins[finite], oracle_margins)
    frame = pd.DataFrame({"point": np.arange(n_points, dtype=np.int64),
                          "split": pd.Series(splits, dtype="string"), "klom": values,
                          "shift_over_std": shift})
    return frame, counts


def summary_rows(points: pd.DataFrame, identity: dict, counts: dict, options: KlomOptions):
    """One row per split: identity columns, counts, KLOM statistics, the median
    shift_over_std (why a split saturates) and options."""
    option_columns = {f"klom_{name}": value for name, value in vars(options).items()}
    rows = []
    for split in SPLITS:
        in_split = points["split"] == split
        values = points.loc[in_split, "klom"].to_numpy()
        shift = points.loc[in_split, "shift_over_std"].to_numpy(dtype=np.float64)
        median_shift = float(np.median(shift)) if len(shift) and not np.isnan(shift).all() \
            else np.nan
        rows.append(identity | {"split": split, "n_points": len(values)} | counts
                    | summarise(values) | {"median_shift_over_std": median_shift}
                    | option_columns)
    return rows


def klom_table(entries) -> pd.DataFrame:
    """`entries`: iterable of (points, metadata) with identity, counts and options in metadata.

    Entries whose metadata says `"reference": "holdout"` are KLOM against the
    held-out oracles: they become the `holdout_*` columns and the selection
    (klomflow.paper.add_selection_columns), not rows of their own.
    """
    from klomflow.paper import add_selection_columns

    rows, holdout_rows = [], []
    for points, metadata in entries:
        options = KlomOptions(**metadata["klom_options"])
        target = holdout_rows if metadata.get("reference") == "holdout" else rows
        target += summary_rows(points, metadata["identity"], metadata["counts"], options)
    return add_selection_columns(pd.DataFrame(rows), pd.DataFrame(holdout_rows))


def top1_correct(logits, labels) -> np.ndarray:
    """Per model and point, 1.0 where argmax of the logits is the label, else 0.0.

    logits: [n_models, n_points, n_classes]; labels: [n_points]. A model whose
    logits hold NaN or infinity (a diverged run) gets a row of NaN.
    """
    logits = np.asarray(logits)
    correct = (logits.argmax(-1) == np.asarray(labels)).astype(np.float64)
    correct[~np.isfinite(logits).all(axis=(1, 2))] = np.nan
    return correct


def accuracy_rows(scores, forget_indices, n_train: int, identity: dict, seeds, seconds=None,
                  changed=None, labels=None):
    """Forget, retain and validation accuracy of each model.

    scores: logits [n_models, n_points, n_classes] with `labels`, giving top-1
    accuracy in `{split}_accuracy`; or, where no logits exist, margins
    [n_models, n_points], giving the fraction of points with a positive margin
    (p_y > 1/2, a lower bound on top-1) in `{split}_margin_accuracy`.
    seconds and changed (unlearned runs only): unlearning wall time and how
    many weights the method changed, per model.
    """
    scores = np.asarray(scores)
    if scores.ndim == 3:
        if labels is None:
            raise ValueError("top-1 accuracy from logits needs the labels")
        correct, suffix = top1_correct(scores, labels), "accuracy"
        finite = np.isfinite(scores).all(axis=(1, 2))
    else:
        correct, suffix = (scores > 0).astype(np.float64), "margin_accuracy"
        finite = np.isfinite(scores).all(axis=1)
    splits = point_splits(n_train, scores.shape[1] - n_train, forget_indices)
    rows = []
    for row, seed in enumerate(seeds):
        entry = identity | {"seed": int(seed)}
        for split in SPLITS:
            entry[f"{split}_{suffix}"] = float(correct[row, splits == split].mean())
        if seconds is not None:
            entry["unlearning_seconds"] = float(seconds[row])
        if changed is not None:
            entry["changed_weights"] = int(changed[row])
        entry["diverged"] = not bool(finite[row])
        rows.append(entry)
    return rows


def summary_markdown(table: pd.DataFrame) -> str:
    """p95 per split and average_95, one row per method setting, per forget set."""
    lines = ["# KLOM summary (95th percentile of per-point KLOM; lower is better)", ""]
    if len(table):
        first = table.iloc[0]
        lines.append(f"dataset `{first['dataset']}`, model `{first['model']}`, "
                     f"binning `{first['klom_binning']}`, direction `{first['klom_direction']}`, "
                     f"{first['klom_bins']} bins. `{NOISE_FLOOR}` is the noise floor: held-out "
                     f"oracles scored against the scored oracles. `shift/std`: per split, "
                     f"the median over points of |mean margin shift| / seed-to-seed std "
                     f"between these models and the oracles; KLOM saturates once it is a "
                     f"few units.")
        lines.append("")
    for forget_set, group in table.groupby("forget_set", sort=True):
        lines += [f"## {forget_set}", "",
                  "| method | config_id | forget | retain | val | average_95 "
                  "| shift/std forget / retain / val | n_unlearned | n_diverged |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        settings = sorted(group.groupby(["method", "config_id"]),
                          key=lambda item: (item[0][0] != NOISE_FLOOR, item[0]))
        for (method, config_id), rows in settings:
            p95 = dict(zip(rows["split"], rows["klom_p95"]))
            average = average_95({split: p95.get(split, np.nan) for split in SPLITS})
            shift = dict(zip(rows["split"], rows["median_shift_over_std"]))
            shifts = " / ".join(f"{shift.get(split, np.nan):.2f}" for split in SPLITS)
            lines.append(
                f"| {method} | {config_id} | {p95.get('forget', np.nan):.3f} | "
                f"{p95.get('retain', np.nan):.3f} | {p95.get('val', np.nan):.3f} | "
                f"{average:.3f} | {shifts} | {rows['n_unlearned'].iloc[0]} | "
                f"{rows['n_diverged'].iloc[0]} |"
            )
        lines.append("")
    return "\n".join(lines)


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def accuracy_table(config: dict, identity: dict, n_train: int, labels, original,
                   forget_sets: dict, oracles: dict, unlearned) -> pd.DataFrame:
    """Top-1 accuracy per model: originals and scored oracles per forget set, then unlearned runs.

    original: logits [n_models, n_points, n_classes]; labels: [n_points];
    forget_sets and oracles: {forget_set: indices / logits}; unlearned:
    iterable of (logits, runs table with forget_set, method, config_id, seed,
    unlearning_seconds, changed_weights).
    """
    from klomflow.config import training_seed

    rows = []
    for forget_set, indices in forget_sets.items():
        reference = identity | {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
        seeds = [training_seed(config, "original", None, k) for k in range(len(original))]
        rows += accuracy_rows(original, indices, n_train, reference | {"method": "original"},
                              seeds, labels=labels)
        oracle = oracles[forget_set]
        seeds = [training_seed(config, "oracle", forget_set, k) for k in range(len(oracle))]
        rows += accuracy_rows(oracle, indices, n_train, reference | {"method": "oracle"}, seeds,
                              labels=labels)
    for logits, runs in unlearned:
        forget_set, method, config_id = runs.iloc[0][["forget_set", "method", "config_id"]]
        rows += accuracy_rows(logits, forget_sets[forget_set], n_train,
                              identity | {"forget_set": forget_set, "method": method,
                                          "config_id": config_id},
                              runs["seed"].to_numpy(), runs["unlearning_seconds"].to_numpy(),
                              runs["changed_weights"].to_numpy(), labels=labels)
    return pd.DataFrame(rows)
