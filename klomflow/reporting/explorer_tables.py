"""The explorer page's tables: the overview per forget set, the worst points, the class view.

Built from the run's tables (klom.parquet, paper_klom.parquet, accuracy.parquet,
privacy.parquet) and from klomflow/reporting/explorer_data.py's per-point frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.io import load_array
from klomflow.metrics.klom import SPLITS, finite_models
from klomflow.reporting.explorer_data import ForgetSetData, unlearned_margins
from klomflow.reporting.figures import timing
from klomflow.reporting.names import NOISE_FLOOR

# Columns of privacy.parquet shown in the overview (forget split), and their headers.
PRIVACY_COLUMNS = {
    "ulira_auc": "U-LiRA AUC",
    "lira_auc": "LiRA AUC",
    "competition_forget_quality": "F",
    "competition_score": "score",
}
ACCURACIES = {
    "forget_accuracy": "forget acc.",
    "retain_accuracy": "retain acc.",
    "val_accuracy": "val acc.",
}


def overview_frame(
    klom_table: pd.DataFrame,
    paper_table: pd.DataFrame | None,
    accuracy: pd.DataFrame | None,
    privacy: pd.DataFrame | None,
    data: ForgetSetData,
) -> pd.DataFrame:
    """One row per setting of the forget set: KLOM per split, accuracies, time, privacy.

    KLOM values are klom.parquet's; the p95 intervals (`*_low`, `*_high`) are the paper
    table's, which has them for the selected setting of each method only.
    """
    rows = klom_table[klom_table["forget_set"] == data.name]
    frame = data.settings[["setting", "method", "config_id", "diagnostic", "selected"]].copy()
    for split in SPLITS:
        part = rows[rows["split"] == split].set_index(["method", "config_id"])
        for statistic in ("klom_p95", "klom_mean"):
            frame[f"{split}_{statistic[5:]}"] = [
                part[statistic].get((m, c), np.nan)
                for m, c in zip(frame["method"], frame["config_id"])
            ]
    average = rows.drop_duplicates(["method", "config_id"]).set_index(["method", "config_id"])
    frame["average_95"] = [
        average["average_95"].get(key, np.nan) for key in zip(frame["method"], frame["config_id"])
    ]
    if paper_table is not None and len(paper_table):
        paper = paper_table[paper_table["forget_set"] == data.name]
        for split in SPLITS:
            part = paper[paper["statistic"] == f"{split}_p95"].set_index(["method", "config_id"])
            for bound in ("low", "high"):
                frame[f"{split}_p95_{bound}"] = [
                    part[bound].get(key, np.nan) for key in zip(frame["method"], frame["config_id"])
                ]
    if accuracy is not None and len(accuracy):
        runs = accuracy[accuracy["forget_set"] == data.name]
        runs = runs[~runs.get("diverged", pd.Series(False, index=runs.index)).astype(bool)]
        grouped = runs.groupby(["method", "config_id"])
        for column in [*ACCURACIES, "unlearning_seconds"]:
            if column in runs:
                means = grouped[column].mean()
                frame[column] = [
                    means.get(key, np.nan) for key in zip(frame["method"], frame["config_id"])
                ]
        if "unlearning_seconds_amortised" in runs:
            timings = grouped["unlearning_seconds_amortised"].agg(timing)
            frame["unlearning_timing"] = [
                timings.get(key, "") for key in zip(frame["method"], frame["config_id"])
            ]
    if privacy is not None and len(privacy):
        part = privacy[(privacy["forget_set"] == data.name) & (privacy["split"] == "forget")]
        part = part.set_index(["method", "config_id"])
        for column in PRIVACY_COLUMNS:
            if column in part and part[column].notna().any():
                frame[column] = [
                    part[column].get(key, np.nan)
                    for key in zip(frame["method"], frame["config_id"])
                ]
    return frame


def worst_frame(data: ForgetSetData, k: int) -> pd.DataFrame:
    """The k highest-KLOM points per setting and split, marking retain points of a class
    that has points in the forget set."""
    points = data.points
    forget_classes = set(points.loc[points["split"] == "forget", "label"].tolist())
    rows = []
    for index in data.settings.index:
        column = f"k{index}"
        for split in SPLITS:
            part = points[points["split"] == split].nlargest(k, column)
            for rank, (point, label, value) in enumerate(
                zip(part["point"], part["label"], part[column]), start=1
            ):
                rows.append(
                    {
                        "setting": int(index),
                        "split": split,
                        "rank": rank,
                        "point": int(point),
                        "label": int(label),
                        "klom": float(value),
                        "shares_forget_class": bool(split == "retain" and label in forget_classes),
                    }
                )
    return pd.DataFrame(rows)


def class_frames(results, data: ForgetSetData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per class: share of points with a positive margin per model group and split group,
    per class: median KLOM on retain and val per setting).

    The accuracy here is from margins (p_y > 1/2), stricter than top-1: the margin files
    are what every setting has; accuracy.parquet has the top-1 numbers.
    """
    from pathlib import Path

    results = Path(results)
    points = data.points
    labels = points["label"].to_numpy()
    groups = np.where(
        points["split"] == "val", "val", np.where(points["split"] == "forget", "forget", "retain")
    )
    sources = {
        "original": load_array(results / "margins" / "original.npy"),
        "oracle": load_array(results / "margins" / "oracle" / f"{data.name}.npy"),
    }
    for index, row in data.settings.iterrows():
        if row["method"] != NOISE_FLOOR:
            sources[int(index)] = unlearned_margins(
                results, data.name, row["method"], row["config_id"], row["implementation"]
            )
    rows = []
    for model, margins in sources.items():
        margins = margins[finite_models(margins)]
        correct = (margins > 0).mean(axis=0)  # [n_points], mean over models
        frame = pd.DataFrame({"label": labels, "group": groups, "correct": correct})
        for (label, group), values in frame.groupby(["label", "group"]):
            rows.append(
                {
                    "model": model if isinstance(model, str) else "unlearned",
                    "setting": model if not isinstance(model, str) else -1,
                    "label": int(label),
                    "group": group,
                    "accuracy": float(values["correct"].mean()),
                    "n_points": len(values),
                }
            )
    accuracy = pd.DataFrame(rows)
    medians = []
    for index in data.settings.index:
        frame = points[points["split"].isin(["retain", "val"])]
        for (label, split), values in frame.groupby(["label", "split"]):
            medians.append(
                {
                    "setting": int(index),
                    "label": int(label),
                    "split": split,
                    "median_klom": float(values[f"k{index}"].median()),
                }
            )
    return accuracy, pd.DataFrame(medians)
