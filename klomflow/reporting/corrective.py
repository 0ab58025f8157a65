"""The corrective tables: KLOM against two references and the reference's top-1 metrics,
per method, against the identified fraction |S_f| / |S_m| (docs/corrective.md).

Setting (Goel et al., TMLR 2024; /work/shared facts): the originals trained on a training
set D whose subset S_m was manipulated (klomflow/data/manipulations.py); a method forgets
the identified S_f of S_m and retains D \\ S_f, in which S_m \\ S_f stays manipulated.

Two references, each a set of oracles:
- `without_forget_set` (A): retrained on D \\ S_f, S_m \\ S_f still manipulated: the standard
  KLOM view, one oracle set per fraction;
- `without_manipulated` (B): retrained on D \\ S_m, the corrective gold standard: the
  oracles of the fraction-1.0 set, so no extra training.

Rows (`row`): each method setting (`method`); `noise_floor`, held-out oracles of the
reference against its scored oracles (the best any method can reach at this number of
models); `retrain_without_forget_set`, the held-out oracles of A scored as a method, the
paper's key baseline (against A it is A's noise floor; against B it says how far retraining
without only the identified points is from the gold standard); `original` (top-1 only).

Splits: forget (S_f), unidentified (S_m \\ S_f), retain (D \\ S_f), val (clean validation),
val_triggered (badnets: the triggered validation images whose true label is not the
target), val_pair (interclass: validation images of the two classes).

Top-1 (the reference's logs/visualize.py, from the same logits, against the true labels):
- badnets: accuracy_corrected on val_triggered (target class excluded, the cleaner variant
  of the reference's Acc_corr, which keeps it); attack_success, the share of val_triggered
  predicted as the target; accuracy_rest, clean validation accuracy (Acc_retain);
- interclass: accuracy_corrected on val_pair; attack_success, the share of val_pair
  predicted as the other class of the pair; accuracy_rest on the other validation images;
- random_swap (the reference has no test metric): accuracy_corrected on S_m;
  attack_success, the share of S_m whose label changed predicted as its swapped label;
  accuracy_rest, clean validation accuracy.
All kinds also give manipulated_accuracy (S_m, true labels; the reference's manip_acc)
and unidentified_accuracy (S_m \\ S_f).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.metrics.klom import summarise

REFERENCES = ("without_forget_set", "without_manipulated")
CORRECTIVE_SPLITS = ("forget", "unidentified", "retain", "val", "val_triggered", "val_pair")
ACCURACY_COLUMNS = (
    "accuracy_corrected",
    "attack_success",
    "accuracy_rest",
    "manipulated_accuracy",
    "unidentified_accuracy",
)
# The split whose KLOM against the gold standard says whether a manipulation is corrected.
CORRECTION_SPLIT = {
    "badnets": "val_triggered",
    "interclass": "val_pair",
    "random_swap": "unidentified",
}
ROW_ORDER = ("original", "noise_floor", "retrain_without_forget_set", "method")


def corrective_splits(points: pd.DataFrame, manipulation: dict, forget_indices) -> dict:
    """{split: bool mask over points.parquet's rows} for one identified forget set.

    manipulation: {"name", "kind", and for interclass "classes"}.
    """
    split = points["split"].to_numpy()
    train = split == "train"
    manipulated = train & (points["manipulation"].to_numpy() == manipulation["name"])
    forget = np.zeros(len(points), dtype=bool)
    forget[np.asarray(forget_indices)] = True
    masks = {
        "forget": forget,
        "unidentified": manipulated & ~forget,
        "retain": train & ~forget,
        "val": split == "val",
    }
    if manipulation["kind"] == "badnets":
        masks["val_triggered"] = (split == "val_triggered") & (
            points["manipulation"].to_numpy() == manipulation["name"]
        )
    if manipulation["kind"] == "interclass":
        masks["val_pair"] = (split == "val") & np.isin(
            points["label"].to_numpy(), manipulation["classes"]
        )
    return masks


def klom_rows(values, masks: dict, identity: dict) -> list[dict]:
    """One row per split of per-point KLOM `values` [n_points]: identity, split, n_points,
    the KLOM statistics (klomflow.metrics.klom.summarise; NaN for an empty split)."""
    values = np.asarray(values, dtype=np.float64)
    return [
        identity | {"split": split, "n_points": int(mask.sum())} | summarise(values[mask])
        for split, mask in masks.items()
    ]


def top1_rows(
    logits, points: pd.DataFrame, manipulation: dict, forget_indices, identity: dict
) -> list[dict]:
    """Per model, the reference's top-1 metrics (the module's docstring) from logits
    [n_models, n_points, n_classes], against the true labels (points.parquet's `label`)."""
    logits = np.asarray(logits)
    labels = points["label"].to_numpy()
    predicted = logits.argmax(-1)  # [n_models, n_points]
    correct = predicted == labels
    masks = corrective_splits(points, manipulation, forget_indices)
    manipulated = masks["unidentified"] | (
        masks["forget"] & (points["manipulation"].to_numpy() == manipulation["name"])
    )
    kind = manipulation["kind"]
    if kind == "badnets":
        domain, rest = masks["val_triggered"], masks["val"]
        attacked = predicted[:, domain] == manipulation["target"]
    elif kind == "interclass":
        domain = masks["val_pair"]
        rest = masks["val"] & ~domain
        a, b = manipulation["classes"]
        swapped = np.where(labels == a, b, a)
        attacked = predicted[:, domain] == swapped[domain]
    else:
        trained = points["trained_label"].to_numpy()
        domain, rest = manipulated, masks["val"]
        changed = manipulated & (trained != labels)
        attacked = predicted[:, changed] == trained[changed]
    rows = []
    for model in range(len(logits)):
        finite = np.isfinite(logits[model]).all()
        values = {
            "accuracy_corrected": correct[model, domain].mean(),
            "attack_success": attacked[model].mean() if attacked.shape[1] else np.nan,
            "accuracy_rest": correct[model, rest].mean(),
            "manipulated_accuracy": correct[model, manipulated].mean(),
            "unidentified_accuracy": correct[model, masks["unidentified"]].mean()
            if masks["unidentified"].any()
            else np.nan,
        }
        rows.append(
            identity
            | {"model": model}
            | {key: float(value) if finite else np.nan for key, value in values.items()}
        )
    return rows


def accuracy_summary(per_model: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over models of each top-1 metric, per row of the table."""
    keys = [c for c in per_model.columns if c not in ACCURACY_COLUMNS and c != "model"]
    grouped = per_model.groupby(keys, dropna=False, sort=False)
    means = grouped[list(ACCURACY_COLUMNS)].mean()
    stds = grouped[list(ACCURACY_COLUMNS)].std().add_suffix("_std")
    counts = grouped.size().rename("n_models")
    return pd.concat([counts, means, stds], axis=1).reset_index()


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    rank = table["row"].map({row: k for k, row in enumerate(ROW_ORDER)})
    return (
        table.assign(_rank=rank)
        .sort_values(["manipulation", "_rank", "method", "config_id", "fraction"], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def headline(klom: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """The paper table: per manipulation, row and method setting, one column per fraction
    for each headline metric: accuracy_corrected, attack_success, accuracy_rest (mean over
    models), KLOM p95 of the forget split against A (privacy view) and of the correction
    split (CORRECTION_SPLIT) against B (gold standard)."""
    keys = ["manipulation", "manipulation_kind", "row", "method", "config_id"]
    parts = []
    for column in ("accuracy_corrected", "attack_success", "accuracy_rest"):
        parts.append(
            accuracy[keys + ["fraction", column]]
            .rename(columns={column: "value"})
            .assign(metric=column)
        )
    forget_a = klom[(klom["split"] == "forget") & (klom["reference"] == REFERENCES[0])]
    parts.append(
        forget_a[keys + ["fraction", "klom_p95"]]
        .rename(columns={"klom_p95": "value"})
        .assign(metric="klom_p95_forget_vs_without_forget_set")
    )
    correction = klom["split"] == klom["manipulation_kind"].map(CORRECTION_SPLIT)
    gold = klom[correction & (klom["reference"] == REFERENCES[1])]
    parts.append(
        gold[keys + ["fraction", "klom_p95"]]
        .rename(columns={"klom_p95": "value"})
        .assign(metric="klom_p95_correction_vs_without_manipulated")
    )
    long = pd.concat(parts, ignore_index=True)
    wide = long.pivot_table(
        index=keys + ["metric"], columns="fraction", values="value", dropna=False, sort=False
    ).reset_index()
    wide.columns = [c if isinstance(c, str) else f"{c:g}" for c in wide.columns]
    wide = wide.dropna(subset=[c for c in wide.columns if c[0].isdigit()], how="all")
    return _ordered(wide.assign(fraction=0.0)).drop(columns="fraction")


METRIC_TITLES = {
    "accuracy_corrected": "Acc_corr: top-1 on the affected domain, true labels (higher is better)",
    "attack_success": "attack success: share predicted as the manipulated label (lower is better)",
    "accuracy_rest": "Acc_retain: top-1 on the rest of the validation set",
    "klom_p95_forget_vs_without_forget_set": (
        "KLOM p95, forget split, against oracles retrained without S_f (reference A)"
    ),
    "klom_p95_correction_vs_without_manipulated": (
        "KLOM p95, correction split, against oracles retrained without S_m (reference B)"
    ),
}


def row_label(row) -> str:
    if row["row"] == "method":
        return f"{row['method']} ({row['config_id']})"
    return {
        "original": "original (before unlearning)",
        "noise_floor": "noise floor",
        "retrain_without_forget_set": "Retrain without S_f",
    }[row["row"]]


def markdown(table: pd.DataFrame) -> str:
    """The headline table as Markdown: per manipulation and metric, one line per row."""
    fractions = [c for c in table.columns if c[0].isdigit()]
    lines = [
        "# Corrective unlearning: metric against the identified fraction |S_f| / |S_m|",
        "",
        "Columns: the identified fraction. Each KLOM line names its reference "
        "(A: oracles retrained without S_f; B: retrained without all of S_m, the "
        "corrective gold standard). Top-1 values are means over models.",
        "",
    ]
    for (manipulation, metric), rows in table.groupby(["manipulation", "metric"], sort=False):
        kind = rows["manipulation_kind"].iloc[0]
        split = f" ({CORRECTION_SPLIT[kind]})" if "correction" in metric else ""
        lines += [
            f"## {manipulation} ({kind}): {METRIC_TITLES[metric]}{split}",
            "",
            "| row | " + " | ".join(fractions) + " |",
            "|---|" + "---:|" * len(fractions),
        ]
        for _, row in rows.iterrows():
            cells = ["" if pd.isna(row[f]) else f"{row[f]:.3f}" for f in fractions]
            lines.append(f"| {row_label(row)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def latex(table: pd.DataFrame) -> str:
    """The headline table as LaTeX tabulars, one per manipulation and metric."""
    fractions = [c for c in table.columns if c[0].isdigit()]
    blocks = []
    for (manipulation, metric), rows in table.groupby(["manipulation", "metric"], sort=False):
        head = " & ".join(["row", *fractions]) + r" \\"
        body = [
            " & ".join(
                [row_label(row).replace("_", r"\_")]
                + ["" if pd.isna(row[f]) else f"{row[f]:.3f}" for f in fractions]
            )
            + r" \\"
            for _, row in rows.iterrows()
        ]
        caption = f"{manipulation}: {METRIC_TITLES[metric]}".replace("_", r"\_")
        blocks.append(
            "\n".join(
                [
                    r"\begin{table}",
                    r"\centering",
                    rf"\caption{{{caption}}}",
                    r"\begin{tabular}{l" + "r" * len(fractions) + "}",
                    r"\hline",
                    head,
                    r"\hline",
                    *body,
                    r"\hline",
                    r"\end{tabular}",
                    r"\end{table}",
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


def figure(table: pd.DataFrame, path) -> None:
    """Per manipulation, Acc_corr and the correction split's KLOM against B, per row,
    against the identified fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = [c for c in table.columns if c[0].isdigit()]
    metrics = ["accuracy_corrected", "klom_p95_correction_vs_without_manipulated"]
    manipulations = list(dict.fromkeys(table["manipulation"]))
    fig, axes = plt.subplots(
        len(manipulations), 2, figsize=(10, 3.6 * len(manipulations)), squeeze=False
    )
    for axis_row, manipulation in zip(axes, manipulations):
        for axis, metric in zip(axis_row, metrics):
            rows = table[(table["manipulation"] == manipulation) & (table["metric"] == metric)]
            for _, row in rows.iterrows():
                style = {
                    "retrain_without_forget_set": dict(color="black", linewidth=2.5),
                    "noise_floor": dict(color="grey", linestyle="--"),
                    "original": dict(color="black", linestyle=":"),
                }.get(row["row"], {})
                axis.plot(
                    [float(f) for f in fractions],
                    row[fractions].to_numpy(float),
                    marker="o",
                    label=row_label(row),
                    **style,
                )
            axis.set_xlabel("identified fraction |S_f| / |S_m|")
            axis.set_title(f"{manipulation}: {metric.replace('_', ' ')}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def corrective_tables(
    points: pd.DataFrame,
    manipulations: dict,
    forget_sets: dict,
    klom_entries,
    logit_entries,
    n_oracles: int,
):
    """(KLOM table, per-model top-1 table) of the corrective setting.

    manipulations: {name: resolved spec}; forget_sets: {name: (spec, indices)} of the
    identified sets; klom_entries: [(per-point KLOM values [n_points], entry)] and
    logit_entries: [(logits [n_models, n_points, n_classes], entry)], each entry naming
    forget_set, row, method, config_id (and reference, or holdout_only: the oracles'
    logits of which only those after the n_oracles scored ones are used).
    """

    def identity(entry):
        spec, _ = forget_sets[entry["forget_set"]]
        manipulation = spec["manipulation"]
        return {
            "manipulation": manipulation,
            "manipulation_kind": manipulations[manipulation]["kind"],
            "forget_set": entry["forget_set"],
            "fraction": float(spec["fraction"]),
            "draw": spec["draw"],
            "row": entry["row"],
            "method": entry["method"],
            "config_id": entry["config_id"],
        }

    def manipulation_of(entry):
        name = forget_sets[entry["forget_set"]][0]["manipulation"]
        return {"name": name} | manipulations[name]

    klom, accuracy = [], []
    for values, entry in klom_entries:
        masks = corrective_splits(
            points, manipulation_of(entry), forget_sets[entry["forget_set"]][1]
        )
        klom += klom_rows(values, masks, identity(entry) | {"reference": entry["reference"]})
    for logits, entry in logit_entries:
        if entry.get("holdout_only"):
            logits = logits[n_oracles:]
        accuracy += top1_rows(
            logits,
            points,
            manipulation_of(entry),
            forget_sets[entry["forget_set"]][1],
            identity(entry),
        )
    return _ordered(pd.DataFrame(klom)), pd.DataFrame(accuracy)
