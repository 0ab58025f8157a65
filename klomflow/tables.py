"""From margins to tables: per-point KLOM files, the KLOM and accuracy tables.

Accuracy is read off margins: a point is classified correctly when its
margin is positive (the true class beats every other class), so the
accuracy tables need no logits. The tables' Markdown and LaTeX forms are
rendered by klomflow/render.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.klom import SPLITS, KlomOptions, finite_models, klom_per_point, summarise

# Row name of the noise-floor reference: held-out oracles against the scored oracles, and
# its config_id. The only place these names are written (rules, scripts and modules import them).
NOISE_FLOOR = "oracle_holdout"
NOISE_FLOOR_CONFIG_ID = "reference"
# Per-model accuracies on whole-class forget sets (class_accuracy.parquet).
CLASS_ACCURACY_COLUMNS = ("forget_class_train_accuracy", "other_classes_train_accuracy",
                          "forget_class_val_accuracy", "other_classes_val_accuracy")


def point_splits(n_train: int, n_val: int, forget_indices) -> np.ndarray:
    """Split of every evaluation point: forget, retain (training) or val."""
    splits = np.array(["retain"] * n_train + ["val"] * n_val, dtype=object)
    splits[np.asarray(forget_indices)] = "forget"
    return splits


def klom_points(unlearned_margins, oracle_margins, forget_indices, n_train: int,
                options: KlomOptions) -> tuple[pd.DataFrame, dict]:
    """Per-point KLOM of one (forget set, method setting).

    Models whose margins hold NaN or infinity are diverged runs: they are
    counted and left out. Returns (table of point, split, klom; counts).
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
    if finite.sum() == 0:
        values = np.full(n_points, np.nan)
    else:
        values = klom_per_point(unlearned_margins[finite], oracle_margins, options)
    frame = pd.DataFrame({"point": np.arange(n_points, dtype=np.int64),
                          "split": pd.Series(splits, dtype="string"), "klom": values})
    return frame, counts


def summary_rows(points: pd.DataFrame, identity: dict, counts: dict, options: KlomOptions):
    """One row per split: identity columns, counts, KLOM statistics and options."""
    option_columns = {f"klom_{name}": value for name, value in vars(options).items()}
    rows = []
    for split in SPLITS:
        values = points.loc[points["split"] == split, "klom"].to_numpy()
        rows.append(identity | {"split": split, "n_points": len(values)} | counts
                    | summarise(values) | option_columns)
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


def accuracy_rows(margins, forget_indices, n_train: int, identity: dict, seeds, seconds=None,
                  changed=None):
    """Forget, retain and validation accuracy of each model (row of margins).

    seconds and changed (unlearned runs only): unlearning wall time and how many
    weights the method changed, per model.
    """
    margins = np.asarray(margins)
    splits = point_splits(n_train, margins.shape[1] - n_train, forget_indices)
    rows = []
    for row, seed in enumerate(seeds):
        correct = margins[row] > 0
        entry = identity | {"seed": int(seed)}
        for split in SPLITS:
            entry[f"{split}_accuracy"] = float(correct[splits == split].mean())
        if seconds is not None:
            entry["unlearning_seconds"] = float(seconds[row])
        if changed is not None:
            entry["changed_weights"] = int(changed[row])
        entry["diverged"] = not bool(np.isfinite(margins[row]).all())
        rows.append(entry)
    return rows


def model_groups(config: dict, original, oracles: dict, unlearned):
    """(identity, margins, seeds, runs) of every group of models an accuracy table covers.

    Per forget set of `oracles` ({forget_set: scored oracle margins}) the
    originals and the oracles (config_id NOISE_FLOOR_CONFIG_ID, runs None), then
    each unlearned setting of `unlearned`: iterable of (margins, runs table with
    forget_set, method, config_id, seed, ...), whose identity is read off its
    runs table.
    """
    from klomflow.config import model_seeds

    for forget_set, oracle in oracles.items():
        reference = {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
        yield (reference | {"method": "original"}, original,
               model_seeds(config, "original", None, len(original)), None)
        yield (reference | {"method": "oracle"}, oracle,
               model_seeds(config, "oracle", forget_set, len(oracle)), None)
    for margins, runs in unlearned:
        forget_set, method, config_id = runs.iloc[0][["forget_set", "method", "config_id"]]
        yield ({"forget_set": forget_set, "method": method, "config_id": config_id}, margins,
               runs["seed"].to_numpy(), runs)


def accuracy_table(config: dict, identity: dict, n_train: int, original, forget_sets: dict,
                   oracles: dict, unlearned) -> pd.DataFrame:
    """Accuracy per model: originals and scored oracles per forget set, then unlearned runs.

    forget_sets and oracles: {forget_set: indices / margins}; unlearned:
    iterable of (margins, runs table with forget_set, method, config_id, seed,
    unlearning_seconds, changed_weights).
    """
    rows = []
    for group, margins, seeds, runs in model_groups(config, original, oracles, unlearned):
        costs = {} if runs is None else {"seconds": runs["unlearning_seconds"].to_numpy(),
                                         "changed": runs["changed_weights"].to_numpy()}
        rows += accuracy_rows(margins, forget_sets[group["forget_set"]], n_train,
                              identity | group, seeds, **costs)
    return pd.DataFrame(rows)


# --- class accuracy (the paper's accuracy table) ----------------------------------------------


def class_accuracy_rows(margins, labels, n_train: int, forget_label: int, identity: dict,
                        seeds) -> list[dict]:
    """Per model: accuracy on the forget class and on the other classes, train and val.

    A point counts as correct when its margin is positive (as in accuracy.parquet).
    """
    margins = np.asarray(margins)
    labels = np.asarray(labels)
    in_train = np.arange(len(labels)) < n_train
    masks = {
        "forget_class_train_accuracy": in_train & (labels == forget_label),
        "other_classes_train_accuracy": in_train & (labels != forget_label),
        "forget_class_val_accuracy": ~in_train & (labels == forget_label),
        "other_classes_val_accuracy": ~in_train & (labels != forget_label),
    }
    rows = []
    for row, seed in zip(margins, seeds):
        correct = row > 0
        entry = identity | {"forget_label": int(forget_label), "seed": int(seed)}
        for column, mask in masks.items():
            entry[column] = float(correct[mask].mean()) if mask.any() else np.nan
        entry["diverged"] = not bool(np.isfinite(row).all())
        rows.append(entry)
    return rows


def empty_class_accuracy() -> pd.DataFrame:
    columns = ["forget_set", "method", "config_id", "forget_label", "seed",
               *CLASS_ACCURACY_COLUMNS, "diverged"]
    return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})


def class_accuracy_table(config: dict, labels, n_train: int, original, oracles: dict,
                         forget_labels: dict, unlearned) -> pd.DataFrame:
    """class_accuracy.parquet: class_accuracy_rows of every model group on class forget sets.

    labels: every evaluation point's label; oracles and forget_labels:
    {class forget set: scored oracle margins / its label}; unlearned as in
    model_groups, on class forget sets only.
    """
    rows = []
    for group, margins, seeds, _ in model_groups(config, original, oracles, unlearned):
        rows += class_accuracy_rows(margins, labels, n_train, forget_labels[group["forget_set"]],
                                    group, seeds)
    return pd.DataFrame(rows) if rows else empty_class_accuracy()


def accuracy_table_frame(class_accuracy: pd.DataFrame, klom_table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (class forget set, original / oracle / selected method)."""
    columns = ["forget_set", "method", "config_id", "forget_label", "n_models", "n_diverged"]
    columns += [f"{c}_{s}" for c in CLASS_ACCURACY_COLUMNS for s in ("mean", "std")]
    if len(class_accuracy) == 0:
        return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})
    chosen = klom_table[klom_table["selected"]].drop_duplicates(["forget_set", "method"])
    keep = set(zip(chosen["forget_set"], chosen["method"], chosen["config_id"]))
    rows = []
    for (forget_set, method, config_id), group in class_accuracy.groupby(
            ["forget_set", "method", "config_id"], sort=True):
        if method not in ("original", "oracle") and (forget_set, method, config_id) not in keep:
            continue
        finite = group[~group["diverged"].astype(bool)]
        entry = {"forget_set": forget_set, "method": method, "config_id": config_id,
                 "forget_label": int(group["forget_label"].iloc[0]), "n_models": len(finite),
                 "n_diverged": int(group["diverged"].astype(bool).sum())}
        for column in CLASS_ACCURACY_COLUMNS:
            values = finite[column].to_numpy(dtype=np.float64)
            entry[f"{column}_mean"] = float(values.mean()) if len(values) else np.nan
            entry[f"{column}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        rows.append(entry)
    return pd.DataFrame(rows, columns=columns)
