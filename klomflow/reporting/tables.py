"""From margins to tables: per-point KLOM files, the KLOM and accuracy tables.

Accuracy is top-1, read off the logits: a point is classified correctly when
the argmax of its logits is its label. A positive margin means p_y > 1/2,
stricter than top-1 with more than two classes, so margins give accuracy only
where no logits exist, in columns named `*_margin_accuracy`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.metrics.klom import (
    SPLITS,
    KlomOptions,
    finite_models,
    klom_per_point,
    mean_shift_over_std,
    summarise,
)
from klomflow.reporting.names import NOISE_FLOOR_CONFIG_ID

# Per-model accuracies on whole-class forget sets (class_accuracy.parquet).
CLASS_ACCURACY_COLUMNS = ("forget_class_train_accuracy", "other_classes_train_accuracy",
                          "forget_class_val_accuracy", "other_classes_val_accuracy")


def point_splits(n_train: int, n_val: int, forget_indices, n_points: int | None = None
                 ) -> np.ndarray:
    """Split of every evaluation point: forget, retain (training) or val; the probe points
    of a manipulated dataset, after the validation points up to `n_points`, are
    val_triggered (klomflow/data/manipulations.py), which no split of the KLOM table holds."""
    n_probe = 0 if n_points is None else n_points - n_train - n_val
    splits = np.array(["retain"] * n_train + ["val"] * n_val + ["val_triggered"] * n_probe,
                      dtype=object)
    splits[np.asarray(forget_indices)] = "forget"
    return splits


def klom_points(unlearned_margins, oracle_margins, forget_indices, n_train: int,
                options: KlomOptions, n_val: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-point KLOM of one (forget set, method setting).

    Models whose margins hold NaN or infinity are diverged runs: they are
    counted and left out. Returns (table of point, split, klom, shift_over_std
    (klomflow.metrics.klom.mean_shift_over_std); counts).
    """
    unlearned_margins = np.asarray(unlearned_margins)
    oracle_margins = np.asarray(oracle_margins)
    finite = finite_models(unlearned_margins)
    if not finite_models(oracle_margins).all():
        raise ValueError("oracle margins hold NaN or infinite values: the oracles are broken")
    counts = {"n_unlearned": int(finite.sum()), "n_oracle": len(oracle_margins),
              "n_diverged": int((~finite).sum())}
    n_points = unlearned_margins.shape[1]
    splits = point_splits(n_train, n_points - n_train if n_val is None else n_val,
                          forget_indices, n_points)
    values, shift = np.full(n_points, np.nan), np.full(n_points, np.nan)
    if finite.sum() > 0:
        values = klom_per_point(unlearned_margins[finite], oracle_margins, options)
    if finite.sum() > 1:  # a std needs two models
        shift = mean_shift_over_std(unlearned_margins[finite], oracle_margins)
    frame = pd.DataFrame({"point": np.arange(n_points, dtype=np.int64),
                          "split": pd.Series(splits, dtype="string"), "klom": values,
                          "shift_over_std": shift})
    return frame, counts


def with_accuracy_columns(accuracy: pd.DataFrame) -> pd.DataFrame:
    """accuracy.parquet with `{split}_accuracy` for every row: top-1 where the models had
    logits, else their `{split}_margin_accuracy` (published models imported without
    logits), for figures that plot one accuracy per model."""
    accuracy = accuracy.copy()
    for split in SPLITS:
        top1, margin = f"{split}_accuracy", f"{split}_margin_accuracy"
        if top1 not in accuracy:
            accuracy[top1] = np.nan
        if margin in accuracy:
            accuracy[top1] = accuracy[top1].fillna(accuracy[margin])
    return accuracy


def summary_rows(points: pd.DataFrame, identity: dict, counts: dict, options: KlomOptions):
    """One row per split: identity columns, counts, KLOM statistics, the median
    shift_over_std (why a split saturates) and options."""
    option_columns = {f"klom_{name}": value for name, value in vars(options).items()}
    rows = []
    for split in SPLITS:
        in_split = points["split"] == split
        values = points.loc[in_split, "klom"].to_numpy()
        # Per-point files without the column (written by other tools) give NaN.
        shift = (points.loc[in_split, "shift_over_std"].to_numpy(dtype=np.float64)
                 if "shift_over_std" in points else np.array([]))
        median_shift = float(np.nanmedian(shift)) if len(shift) and not np.isnan(shift).all() \
            else np.nan
        rows.append(identity | {"split": split, "n_points": len(values)} | counts
                    | summarise(values) | {"median_shift_over_std": median_shift}
                    | option_columns)
    return rows


def klom_table(entries) -> pd.DataFrame:
    """`entries`: iterable of (points, metadata) with identity, counts and options in metadata.

    Entries whose metadata says `"reference": "holdout"` are KLOM against the
    held-out oracles: they become the `holdout_*` columns and the selection
    (klomflow.reporting.selection.add_selection_columns), not rows of their own.
    """
    from klomflow.reporting.selection import add_selection_columns

    rows, holdout_rows = [], []
    for points, metadata in entries:
        options = KlomOptions(**metadata["klom_options"])
        target = holdout_rows if metadata.get("reference") == "holdout" else rows
        target += summary_rows(points, metadata["identity"], metadata["counts"], options)
    return add_selection_columns(pd.DataFrame(rows), pd.DataFrame(holdout_rows))


def unchanged_weights_counts(table: pd.DataFrame, runs_tables, specs: dict | None = None) -> list:
    """Per row of a KLOM table: how many of its setting's models kept every weight.

    runs_tables: the unlearned runs tables (forget_set, method, config_id,
    changed_weights per model). A count above zero is a finding: those models'
    KLOM is do_nothing's (ssd at a high alpha selects no weight). NaN where it
    says nothing: the noise floor (no runs), do_nothing (unchanged by design)
    and methods whose answer is logits, not weights (dm_direct). `specs`: the config's
    method specs (klomflow.config.method_specs; the built-ins when None).
    """
    from klomflow.unlearning.methods.registry import REGISTRY

    specs = REGISTRY if specs is None else specs

    counts = {}
    for runs in runs_tables:
        for key, rows in runs.groupby(["forget_set", "method", "config_id"], sort=False):
            counts[key] = counts.get(key, 0) + int((rows["changed_weights"] == 0).sum())
    values = []
    for row in table[["forget_set", "method", "config_id", "implementation"]].itertuples(
            index=False):
        spec = specs.get(row.implementation)
        says_nothing = spec is None or spec.name == "do_nothing" or spec.outputs_logits
        key = (row.forget_set, row.method, row.config_id)
        values.append(np.nan if says_nothing or key not in counts else counts[key])
    return values


def with_unchanged_weights(table: pd.DataFrame, runs_tables, specs: dict | None = None
                           ) -> pd.DataFrame:
    """`table` with `n_unchanged` (unchanged_weights_counts) after its n_diverged column."""
    if len(table) == 0:
        return table
    table = table.copy()
    table.insert(list(table.columns).index("n_diverged") + 1, "n_unchanged",
                 unchanged_weights_counts(table, runs_tables, specs))
    return table


def with_forget_set_kinds(table: pd.DataFrame, forget_sets: dict) -> pd.DataFrame:
    """`table` with `forget_set_kind` and `forget_set_proxy` (the worst_case proxy,
    else None) after its forget_set column: a worst-case set is a proxy, and every
    row scored on one says so."""
    table = table.copy()
    at = list(table.columns).index("forget_set") + 1
    specs = table["forget_set"].map(forget_sets)
    table.insert(at, "forget_set_kind", specs.map(lambda spec: spec["kind"]))
    table.insert(at + 1, "forget_set_proxy",
                 specs.map(lambda spec: spec.get("proxy") if spec["kind"] == "worst_case"
                           else None))
    return table


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
                  changed=None, labels=None, amortised=None, n_val: int | None = None):
    """Forget, retain and validation accuracy of each model.

    scores: logits [n_models, n_points, n_classes] with `labels`, giving top-1
    accuracy in `{split}_accuracy`; or, where no logits exist, margins
    [n_models, n_points], giving the fraction of points with a positive margin
    (p_y > 1/2, a lower bound on top-1) in `{split}_margin_accuracy`.
    seconds and changed (unlearned runs only): unlearning wall time and how
    many weights the method changed, per model; amortised: whether a model's
    seconds are its share of an ensemble's wall time (wall time / models)
    rather than its own wall time alone.
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
    splits = point_splits(n_train, scores.shape[1] - n_train if n_val is None else n_val,
                          forget_indices, scores.shape[1])
    rows = []
    for row, seed in enumerate(seeds):
        entry = identity | {"seed": int(seed)}
        for split in SPLITS:
            entry[f"{split}_{suffix}"] = float(correct[row, splits == split].mean())
        if seconds is not None:
            entry["unlearning_seconds"] = float(seconds[row])
        if amortised is not None:
            entry["unlearning_seconds_amortised"] = bool(amortised[row])
        if changed is not None:
            entry["changed_weights"] = int(changed[row])
        entry["diverged"] = not bool(finite[row])
        rows.append(entry)
    return rows


def model_groups(seeds_of, original, oracles: dict, unlearned):
    """(identity, margins, seeds, runs) of every group of models an accuracy table covers.

    Per forget set of `oracles` ({forget_set: scored oracle margins}) the
    originals and the oracles (config_id NOISE_FLOOR_CONFIG_ID, runs None), then
    each unlearned setting of `unlearned`: iterable of (margins, runs table with
    forget_set, method, config_id, seed, ...), whose identity is read off its
    runs table. `seeds_of(role, forget_set, n_models)` gives the seeds of the first
    n_models models of a role ("original" or "oracle"), in row order.
    """
    for forget_set, oracle in oracles.items():
        reference = {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
        yield (reference | {"method": "original"}, original,
               seeds_of("original", None, len(original)), None)
        yield (reference | {"method": "oracle"}, oracle,
               seeds_of("oracle", forget_set, len(oracle)), None)
    for margins, runs in unlearned:
        forget_set, method, config_id = runs.iloc[0][["forget_set", "method", "config_id"]]
        yield ({"forget_set": forget_set, "method": method, "config_id": config_id}, margins,
               runs["seed"].to_numpy(), runs)


def group_key(group: dict) -> str:
    """The name a model group's logits are filed under (rules/common.smk, accuracy_logit_shards)."""
    if group["config_id"] == NOISE_FLOOR_CONFIG_ID:
        return "original" if group["method"] == "original" else f"oracle/{group['forget_set']}"
    return f"unlearned/{group['forget_set']}/{group['method']}/{group['config_id']}"


def scores_of(group: dict, margins, logits_of):
    """A group's logits for top-1 accuracy, or its margins where it has none (published
    models); `logits_of(key)` returns the logits filed under the group's key, or None."""
    logits = logits_of(group_key(group)) if logits_of is not None else None
    return margins if logits is None else logits[:len(margins)]


def accuracy_table(seeds_of, identity: dict, n_train: int, labels, original,
                   forget_sets: dict, oracles: dict, unlearned, logits_of=None,
                   n_val: int | None = None) -> pd.DataFrame:
    """Accuracy per model: originals and scored oracles per forget set, then unlearned runs.

    original and oracles ({forget_set: scored oracle margins}) are margins, unlearned an
    iterable of (margins, runs table); `logits_of(key)` gives a group's logits (see
    group_key), from which accuracy is top-1; a group without logits (published models)
    gets `*_margin_accuracy` from its margins instead.
    """
    rows = []
    for group, margins, seeds, runs in model_groups(seeds_of, original, oracles, unlearned):
        costs = {} if runs is None else {"seconds": runs["unlearning_seconds"].to_numpy(),
                                         "changed": runs["changed_weights"].to_numpy()}
        if runs is not None and "unlearning_seconds_amortised" in runs:  # not in older runs
            costs["amortised"] = runs["unlearning_seconds_amortised"].to_numpy()
        rows += accuracy_rows(scores_of(group, margins, logits_of),
                              forget_sets[group["forget_set"]], n_train, identity | group, seeds,
                              labels=labels, n_val=n_val, **costs)
    return pd.DataFrame(rows)


# --- class accuracy (the paper's accuracy table) ----------------------------------------------


def class_accuracy_rows(scores, labels, n_train: int, forget_label: int, identity: dict,
                        seeds) -> list[dict]:
    """Per model: accuracy on the forget class and on the other classes, train and val.

    scores: logits [n_models, n_points, n_classes] (top-1, as in accuracy.parquet), or
    margins [n_models, n_points] where no logits exist (a positive margin counts;
    `accuracy_from` says which).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim == 3:
        correct_rows, source = top1_correct(scores, labels), "logits"
    else:
        correct_rows = np.where(np.isfinite(scores), scores > 0, np.nan)
        source = "margins"
    in_train = np.arange(len(labels)) < n_train
    masks = {
        "forget_class_train_accuracy": in_train & (labels == forget_label),
        "other_classes_train_accuracy": in_train & (labels != forget_label),
        "forget_class_val_accuracy": ~in_train & (labels == forget_label),
        "other_classes_val_accuracy": ~in_train & (labels != forget_label),
    }
    rows = []
    for correct, seed in zip(correct_rows, seeds):
        entry = identity | {"forget_label": int(forget_label), "seed": int(seed)}
        for column, mask in masks.items():
            entry[column] = float(correct[mask].mean()) if mask.any() else np.nan
        entry["diverged"] = not bool(np.isfinite(correct).all())
        entry["accuracy_from"] = source
        rows.append(entry)
    return rows


def empty_class_accuracy() -> pd.DataFrame:
    columns = ["forget_set", "method", "config_id", "forget_label", "seed",
               *CLASS_ACCURACY_COLUMNS, "diverged", "accuracy_from"]
    return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})


def class_accuracy_table(seeds_of, labels, n_train: int, original, oracles: dict,
                         forget_labels: dict, unlearned, logits_of=None) -> pd.DataFrame:
    """class_accuracy.parquet: class_accuracy_rows of every model group on class forget sets.

    labels: every evaluation point's label; oracles and forget_labels:
    {class forget set: scored oracle margins / its label}; unlearned as in
    model_groups, on class forget sets only.
    """
    rows = []
    for group, margins, seeds, _ in model_groups(seeds_of, original, oracles, unlearned):
        rows += class_accuracy_rows(scores_of(group, margins, logits_of), labels, n_train,
                                    forget_labels[group["forget_set"]], group, seeds)
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
