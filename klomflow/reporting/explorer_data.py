"""The explorer page's data: per-point KLOM, margin histograms and images of one run.

Reads a run's results folder in the workflow's own layout (docs/outputs.md) and returns
plain tables (pandas) for klomflow/reporting/explorer_charts.py to draw. The histograms are
counted on the bins KLOM used for each point (klomflow.metrics.klom.bin_edges), so the page
shows what the metric compared.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from klomflow.io import load_array
from klomflow.metrics.klom import KlomOptions, bin_edges, binned_counts, finite_models
from klomflow.options import ExplorerOptions
from klomflow.reporting.names import NOISE_FLOOR


@dataclass
class ForgetSetData:
    """Everything the page shows of one forget set."""

    name: str
    settings: pd.DataFrame  # one row per setting: setting (label), method, config_id, diagnostic
    points: pd.DataFrame  # one row per point: point, split, label, source_index, k{i}, s{i}
    histograms: pd.DataFrame  # one row per (detail point, setting): lo, hi, counts per side
    detail_points: np.ndarray  # the points with histograms and images
    sampling_note: str
    sidecar: dict = field(default_factory=dict)


def setting_label(method: str, config_id: str, diagnostic: bool) -> str:
    if method == NOISE_FLOOR:
        return f"{NOISE_FLOOR} (noise floor)"
    return f"{method}{' †' if diagnostic else ''} [{config_id}]"


def forget_set_settings(klom_table: pd.DataFrame, forget_set: str) -> pd.DataFrame:
    """The settings scored on `forget_set`, the noise floor first, then by method."""
    rows = (
        klom_table[klom_table["forget_set"] == forget_set]
        .drop_duplicates(["method", "config_id"])[
            ["method", "config_id", "implementation", "diagnostic", "selected"]
        ]
        .copy()
    )
    rows["diagnostic"] = rows["diagnostic"].astype(bool)
    rows["order"] = (rows["method"] != NOISE_FLOOR).astype(int)
    rows = rows.sort_values(["order", "method", "config_id"]).drop(columns="order")
    rows["setting"] = [
        setting_label(m, c, d)
        for m, c, d in zip(rows["method"], rows["config_id"], rows["diagnostic"])
    ]
    return rows.reset_index(drop=True)


def shown_settings(settings: pd.DataFrame, options: ExplorerOptions) -> tuple[pd.DataFrame, str]:
    """The settings the page shows, and the sentence that says which when not all.

    Up to `options.all_settings_up_to` settings (noise floor left out of the count): every
    one. Above, a grid's every value would multiply the page (the paper config scores about
    110 settings per forget set, each with every point's KLOM): the noise floor and each
    method's selected setting, the paper table's rows.
    """
    n_settings = int((settings["method"] != NOISE_FLOOR).sum())
    if n_settings <= options.all_settings_up_to:
        return settings, ""
    keep = (settings["method"] == NOISE_FLOOR) | settings["selected"].fillna(False).astype(bool)
    kept = settings[keep].reset_index(drop=True)  # the page indexes settings from 0
    note = (f"Settings: the noise floor and each method's selected setting ({len(kept) - 1} "
            f"of {n_settings}; every setting's KLOM is in results/tables/klom.parquet). ")
    return kept, note


def unlearned_margins(
    results: Path, forget_set: str, method: str, config_id: str, implementation: str
) -> np.ndarray:
    """The margins a setting's per-point KLOM compared with the oracles (finite rows)."""
    if method == NOISE_FLOOR:
        path = results / "margins" / NOISE_FLOOR / f"{forget_set}.npy"
    else:
        path = results / "margins" / "unlearned" / forget_set / method / f"{config_id}.npy"
        if not path.exists() and implementation == "do_nothing":
            path = results / "margins" / "original.npy"  # published originals: no job
    margins = load_array(path)
    return margins[finite_models(margins)]


def detail_points(
    points: pd.DataFrame, options: ExplorerOptions, seed: int = 0
) -> tuple[np.ndarray, str]:
    """The points that get histograms and images, and the sentence that says which."""
    n_points = len(points)
    if n_points <= options.all_points_up_to:
        return points["point"].to_numpy(), f"Histograms and images: every point ({n_points:,})."
    chosen = set(points.loc[points["split"] == "forget", "point"].tolist())
    n_forget = len(chosen)
    klom_columns = [column for column in points if column.startswith("k") and column[1:].isdigit()]
    for column in klom_columns:
        for _, group in points.groupby("split"):
            chosen.update(group.nlargest(options.worst_points, column)["point"].tolist())
    n_worst = len(chosen) - n_forget
    rest = np.setdiff1d(points["point"].to_numpy(), np.fromiter(chosen, dtype=np.int64))
    generator = np.random.default_rng(seed)
    sample = generator.choice(rest, size=min(options.sample_points, len(rest)), replace=False)
    chosen.update(sample.tolist())
    note = (
        f"Histograms and images for {len(chosen):,} of {n_points:,} points: the forget set "
        f"({n_forget:,}), the {options.worst_points} highest KLOM per setting and split "
        f"({n_worst:,} more), and {len(sample):,} drawn at random (seed {seed}). "
        f"Every point has its KLOM and shift in the scatter."
    )
    return np.array(sorted(chosen), dtype=np.int64), note


def setting_histograms(unlearned, oracle, original, chosen, options: KlomOptions) -> dict:
    """Counts of the three samples at the `chosen` points on KLOM's bins for each point.

    A setting whose every run diverged has no KLOM (NaN) and no unlearned sample: its bins
    are then the oracles' range alone.
    """
    reference = unlearned if len(unlearned) else oracle
    edges, _, _ = bin_edges(reference[:, chosen], oracle[:, chosen], options)
    counts = {
        side: binned_counts(margins[:, chosen], edges, options)
        for side, margins in (("unlearned", unlearned), ("oracle", oracle), ("original", original))
    }
    return {
        "lo": edges[:, 0],
        "hi": edges[:, -1],
        **counts,
        # Samples not counted: on the upper edge (reference binning), or originals outside.
        **{f"{side}_left_out": len(margins) - counts[side].sum(axis=1)
           for side, margins in (("unlearned", unlearned), ("oracle", oracle),
                                 ("original", original))},
    }


def forget_set_data(
    results: Path,
    klom_table: pd.DataFrame,
    points_table: pd.DataFrame,
    forget_set: str,
    klom_options: KlomOptions,
    options: ExplorerOptions,
    seed: int = 0,
) -> ForgetSetData:
    results = Path(results)
    settings, settings_note = shown_settings(forget_set_settings(klom_table, forget_set), options)
    points = points_table[["point", "label", "source_index"]].copy()
    points["split"] = ""
    for index, row in settings.iterrows():
        per_point = pd.read_parquet(
            results / "klom" / forget_set / row["method"] / f"{row['config_id']}.parquet"
        ).set_index("point")
        points[f"k{index}"] = per_point["klom"].reindex(points["point"]).to_numpy()
        points[f"s{index}"] = per_point["shift_over_std"].reindex(points["point"]).to_numpy()
        points["split"] = per_point["split"].reindex(points["point"]).to_numpy()
    chosen, note = detail_points(points, options, seed)
    note = settings_note + note
    original = load_array(results / "margins" / "original.npy")
    original = original[finite_models(original)]
    oracle = load_array(results / "margins" / "oracle" / f"{forget_set}.npy")
    frames = []
    for index, row in settings.iterrows():
        unlearned = unlearned_margins(
            results, forget_set, row["method"], row["config_id"], row["implementation"]
        )
        counts = setting_histograms(unlearned, oracle, original, chosen, klom_options)
        settings.loc[index, ["n_unlearned", "n_oracle", "n_original"]] = [
            len(unlearned), len(oracle), len(original)]
        frames.append(
            pd.DataFrame(
                {
                    "point": chosen,
                    "setting": index,
                    "lo": counts["lo"],
                    "hi": counts["hi"],
                    "unlearned": list(counts["unlearned"]),
                    "oracle": list(counts["oracle"]),
                    "original": list(counts["original"]),
                    **{f"{side}_left_out": counts[f"{side}_left_out"]
                       for side in ("unlearned", "oracle", "original")},
                }
            )
        )
    sidecar_path = results / "forget_sets" / f"{forget_set}.json"
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    return ForgetSetData(
        forget_set, settings, points, pd.concat(frames, ignore_index=True), chosen, note, sidecar
    )


# --- images ----------------------------------------------------------------------------------


def image_uri(pixels: np.ndarray) -> str:
    """A data URI of one image: uint8 [H, W] as PNG (lossless), [H, W, 3] as JPEG of
    quality 90 (half the size of a colour PNG)."""
    from PIL import Image

    buffer = io.BytesIO()
    kind = "jpeg" if np.ndim(pixels) == 3 else "png"
    options = {"quality": 90} if kind == "jpeg" else {"optimize": True}
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format=kind.upper(), **options)
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def point_images(images: np.ndarray | None, chosen) -> dict:
    """{point: data URI} for the chosen points; images: uint8 [n_points, H, W(, 3)] or None."""
    if images is None:
        return {}
    return {int(point): image_uri(images[point]) for point in chosen}


def dataset_images(dataset: dict, points: pd.DataFrame) -> np.ndarray | None:
    """Every evaluation point's image as uint8, in point order; None when the files are absent."""
    from klomflow.data.images import raw_images

    try:
        train, val = raw_images(dataset)
    except FileNotFoundError:
        return None
    is_train = (points["split"] == "train").to_numpy()
    source = points["source_index"].to_numpy()
    shape = train.shape[1:]
    images = np.zeros((len(points), *shape), dtype=np.uint8)
    images[is_train] = train[source[is_train]]
    images[~is_train] = val[source[~is_train]]
    return images
