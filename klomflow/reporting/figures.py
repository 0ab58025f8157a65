"""Report figures, one set per forget set (`snakemake --report`).

Each function takes tables and arrays already read from results/ and returns
a matplotlib Figure; the plot_forget_set rule saves them as PNG. Methods are
shown at their selected setting (klomflow/reporting/selection.py) unless a figure says it
shows every setting.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from klomflow.metrics.klom import SPLITS, KlomOptions, binned_margins  # noqa: E402
from klomflow.reporting.markup import STATISTIC_LABELS  # noqa: E402
from klomflow.reporting.names import NOISE_FLOOR  # noqa: E402
from klomflow.reporting.styles import CEILING_COLOUR, TIMING_FILLS, method_style  # noqa: E402

SPLIT_COLOURS = {"forget": "tab:red", "retain": "tab:blue", "val": "tab:green"}
UNLEARNED_COLOUR, ORACLE_COLOUR, FLOOR_COLOUR = "tab:purple", "tab:orange", "0.4"
# Cost axis floor: doing nothing takes microseconds, a log axis needs a positive value.
MIN_COST_FRACTION = 1e-6
# How a setting's unlearning_seconds were measured (setting_summary's unlearning_timing),
# and its marker on the cost axis: a model's share of an ensemble's wall time (the
# ensemble's time over its models, klomflow/unlearning/twins/) is not one model's
# wall time alone, so the two are told apart wherever they share an axis.
# The marker's shape is the method's (klomflow/reporting/styles.py); its fill says how
# the time was measured.
TIMING_SYMBOLS = {"alone": "filled", "amortised": "hollow", "mixed": "hatched",
                  "unrecorded": "faded"}
TIMING_WORDS = {"alone": "one model timed alone",
                "amortised": "amortised (an ensemble's wall time / its models)",
                "mixed": "some models timed alone, some amortised",
                "unrecorded": "not recorded whether amortised"}


def save(figure, path) -> None:
    """PNG without a timestamp or software tag, so equal figures give equal files."""
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def _label(method: str, diagnostic: bool) -> str:
    return method + (" †" if diagnostic else "")


def _ceiling(ax, ceiling: float | None, vertical: bool = True) -> None:
    """KLOM's ceiling, ln(1 / eps): disjoint unlearned and oracle histograms."""
    if ceiling is None or not np.isfinite(ceiling):
        return
    line = ax.axvline if vertical else ax.axhline
    line(ceiling, color=CEILING_COLOUR, linestyle="-.", linewidth=1,
         label=f"ceiling ln(1/eps) = {ceiling:.2f}")


def klom_p95_figure(paper: pd.DataFrame, forget_set: str, ceiling: float | None = None):
    """p95 KLOM per method and split, 95% intervals over models, the noise floor and the
    ceiling (ln(1 / eps), when given) marked.

    paper: paper_klom.parquet rows of one forget set.
    """
    methods = [m for m in sorted(paper["method"].unique()) if m != NOISE_FLOOR]
    diagnostic = dict(zip(paper["method"], paper["diagnostic"]))
    cells = {(r.method, r.statistic): r for r in paper.itertuples()}
    figure, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(methods) + 2.2), sharey=True)
    positions = np.arange(len(methods))
    for ax, split in zip(axes, SPLITS):
        statistic = f"{split}_p95"
        estimates = np.array([cells[(m, statistic)].estimate for m in methods], dtype=float)
        low = np.array([cells[(m, statistic)].low for m in methods], dtype=float)
        high = np.array([cells[(m, statistic)].high for m in methods], dtype=float)
        errors = np.vstack([np.clip(estimates - low, 0, None), np.clip(high - estimates, 0, None)])
        ax.barh(positions, estimates, color=SPLIT_COLOURS[split], alpha=0.75)
        ax.errorbar(estimates, positions, xerr=np.nan_to_num(errors), fmt="none", ecolor="k",
                    capsize=3, linewidth=1)
        floor = cells.get((NOISE_FLOOR, statistic))
        if floor is not None:
            ax.axvline(floor.estimate, color=FLOOR_COLOUR, linestyle="--",
                       label=f"noise floor {floor.estimate:.2f}")
            if np.isfinite(floor.low) and np.isfinite(floor.high):
                ax.axvspan(floor.low, floor.high, color=FLOOR_COLOUR, alpha=0.15)
        _ceiling(ax, ceiling)
        if floor is not None or ceiling is not None:
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{STATISTIC_LABELS[statistic]} p95")
        ax.set_xlabel("KLOM (95th percentile over points)")
    axes[0].set_yticks(positions, [_label(m, diagnostic.get(m)) for m in methods])
    axes[0].invert_yaxis()
    figure.suptitle(f"{forget_set}: p95 KLOM of each method's selected setting "
                    "(bars: 95% intervals over models; dashed: noise floor; dash-dot: ceiling)")
    figure.tight_layout()
    return figure


def klom_distribution_figure(per_point: dict, diagnostic: dict, forget_set: str,
                             ceiling: float | None = None):
    """Box plots of per-point KLOM per method, one panel per split; the ceiling
    (ln(1 / eps)) marked when given.

    per_point: {method: frame with split, klom}, noise floor included.
    """
    methods = sorted(per_point, key=lambda m: (m != NOISE_FLOOR, m))
    figure, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(methods) + 2.2), sharey=True)
    for ax, split in zip(axes, SPLITS):
        data = []
        for method in methods:
            frame = per_point[method]
            values = frame.loc[frame["split"] == split, "klom"].to_numpy(dtype=float)
            data.append(values[np.isfinite(values)])
        boxes = ax.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=False,
                           patch_artist=True, medianprops={"color": "k"})
        for method, patch in zip(methods, boxes["boxes"]):
            patch.set_facecolor(FLOOR_COLOUR if method == NOISE_FLOOR else SPLIT_COLOURS[split])
            patch.set_alpha(0.6)
        _ceiling(ax, ceiling)
        ax.set_title(f"{split} points")
        ax.set_xlabel("per-point KLOM")
    labels = ["noise floor" if m == NOISE_FLOOR else _label(m, diagnostic.get(m))
              for m in methods]
    axes[0].set_yticks(np.arange(1, len(methods) + 1), labels)
    axes[0].invert_yaxis()
    if ceiling is not None:
        axes[-1].legend(loc="lower right", fontsize=8)
    figure.suptitle(f"{forget_set}: distribution of per-point KLOM (boxes: quartiles, "
                    "whiskers: 1st-99th percentile)")
    figure.tight_layout()
    return figure


def histogram_points(per_point: dict, forget_indices, n_points: int) -> list[int]:
    """Forget points to show: at evenly spaced quantiles (median to worst) of their mean
    per-point KLOM over the methods, so both typical and hard points appear."""
    forget_indices = np.asarray(forget_indices)
    methods = [m for m in per_point if m != NOISE_FLOOR]
    if not methods or n_points < 1:
        return []
    values = np.vstack([per_point[m].set_index("point").loc[forget_indices, "klom"].to_numpy()
                        for m in methods])
    mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
    mean = np.nan_to_num(mean, nan=-1.0)
    order = forget_indices[np.lexsort((forget_indices, mean))]
    ranks = np.unique(np.round(np.linspace(0.5, 1.0, n_points) * (len(order) - 1)).astype(int))
    return [int(order[rank]) for rank in ranks]


def margin_histogram_figure(unlearned: dict, oracle, per_point: dict, diagnostic: dict,
                            points, options: KlomOptions, forget_set: str):
    """For a few forget points, the unlearned and oracle margin histograms side by side,
    over the bins KLOM uses (joint range of both samples after clipping).

    unlearned: {method: margins [n_models, n_points]} of selected settings; oracle: the
    scored oracles' margins.
    """
    methods = sorted(unlearned)
    rows, columns = max(len(methods), 1), max(len(points), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 1.9 * rows + 1.0),
                                squeeze=False)
    for row, method in enumerate(methods):
        margins = unlearned[method]
        margins = margins[np.isfinite(margins).all(axis=1)]
        klom_by_point = per_point[method].set_index("point")["klom"]
        for column, point in enumerate(points):
            ax = axes[row, column]
            if len(margins) == 0:
                ax.text(0.5, 0.5, f"{method}: every run diverged", ha="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            # KLOM's own bins and probabilities (with the reference binning, a sample on
            # the upper edge is not counted), so the bars are what KLOM compares.
            edges, p, q = (values[0] for values in binned_margins(
                margins[:, [point]], np.asarray(oracle)[:, [point]], options))
            width = (edges[1] - edges[0]) * 0.45
            centres = (edges[:-1] + edges[1:]) / 2
            ax.bar(centres - width / 2, p, width=width, color=UNLEARNED_COLOUR, label="unlearned")
            ax.bar(centres + width / 2, q, width=width, color=ORACLE_COLOUR, label="oracle")
            ax.set_title(f"{_label(method, diagnostic.get(method))}, point {point}: "
                         f"KLOM {klom_by_point.loc[point]:.2f}", fontsize=9)
            ax.tick_params(labelsize=7)
            if column == 0:
                ax.set_ylabel("share of models", fontsize=8)
            if row == rows - 1:
                ax.set_xlabel("margin")
    if methods and points:
        axes[0, 0].legend(fontsize=7)
    figure.suptitle(f"{forget_set}: margins of the unlearned models and of the oracles at "
                    "forget points (KLOM compares these two histograms)")
    # Room for the title above the first row of panels (tight_layout alone ignores it).
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / figure.get_figheight()))
    return figure


def timing(amortised: pd.Series) -> str:
    """How a group of models' seconds were measured (a key of TIMING_WORDS), from their
    `*_seconds_amortised` flags (None or NaN: not recorded)."""
    if amortised.isna().any():
        return "unrecorded"
    if amortised.astype(bool).all():
        return "amortised"
    return "alone" if not amortised.astype(bool).any() else "mixed"


def setting_summary(klom_table: pd.DataFrame, accuracy: pd.DataFrame, retrain_seconds: float,
                    retrain_timing: str = "unrecorded"):
    """One row per method setting of one forget set: average_95, accuracies, cost.

    unlearning_timing says how the setting's seconds were measured (a key of
    TIMING_WORDS); retrain_timing (attrs) how retraining's were.
    """
    settings = (klom_table[klom_table["method"] != NOISE_FLOOR]
                .drop_duplicates(["method", "config_id"])
                [["method", "config_id", "diagnostic", "average_95", "selected"]])
    runs = accuracy[~accuracy["method"].isin(["original", "oracle"])]
    means = (runs.groupby(["method", "config_id"])
             [["unlearning_seconds", "forget_accuracy", "val_accuracy"]].mean().reset_index())
    if "unlearning_seconds_amortised" in runs:
        timings = (runs.groupby(["method", "config_id"])["unlearning_seconds_amortised"]
                   .agg(timing).rename("unlearning_timing").reset_index())
        means = means.merge(timings, on=["method", "config_id"], how="left")
    else:  # accuracy tables from before the flag
        means["unlearning_timing"] = "unrecorded"
    summary = settings.merge(means, on=["method", "config_id"], how="left")
    summary["unlearning_timing"] = summary["unlearning_timing"].fillna("unrecorded")
    # Published models come without their training time: then the cost axis is seconds.
    denominator = retrain_seconds if np.isfinite(retrain_seconds) else 1.0
    summary["cost_fraction"] = np.maximum(summary["unlearning_seconds"] / denominator,
                                          MIN_COST_FRACTION)
    summary.attrs["retrain_seconds_known"] = bool(np.isfinite(retrain_seconds))
    summary.attrs["retrain_timing"] = retrain_timing
    return summary.sort_values(["method", "config_id"]).reset_index(drop=True)


def _scatter_settings(ax, summary, x, y, timing_markers=False):
    """Every setting a small dot, the selected ones large, in the method's colour and
    marker (klomflow/reporting/styles.py); with `timing_markers`, each marker's fill says
    how its time was measured (TIMING_FILLS)."""
    for method in sorted(summary["method"].unique()):
        colour, marker = method_style(method)
        rows = summary[summary["method"] == method]
        label = _label(method, bool(rows["diagnostic"].iloc[0]))
        groups = rows.groupby("unlearning_timing") if timing_markers else [("alone", rows)]
        for kind, group in groups:
            ax.scatter(group[x], group[y], s=12, marker=marker,
                       **({"alpha": 0.35} | TIMING_FILLS[kind](colour)))
        chosen = rows[rows["selected"]]
        kind = (chosen["unlearning_timing"].iloc[0]
                if timing_markers and len(chosen) else "alone")
        style = TIMING_FILLS[kind](colour)
        style.setdefault("edgecolors", "k")
        ax.scatter(chosen[x], chosen[y], s=60, marker=marker, label=label, **style)


def _cost_note(summary) -> str:
    """What the cost axis's seconds are: how each marker's and retraining's were measured."""
    present = set(summary.get("unlearning_timing", []))
    note = "unlearning: " + "; ".join(f"{TIMING_SYMBOLS[kind]}: {TIMING_WORDS[kind]}"
                                      for kind in TIMING_WORDS if kind in present)
    if summary.attrs.get("retrain_seconds_known", True):
        note += f"\nretraining: {TIMING_WORDS[summary.attrs.get('retrain_timing', 'unrecorded')]}"
    return note


def klom_vs_cost_figure(summary: pd.DataFrame, floor_average: float, forget_set: str):
    """average_95 of every setting against its wall time as a fraction of retraining."""
    figure, ax = plt.subplots(figsize=(8, 5.5))
    _scatter_settings(ax, summary, "cost_fraction", "average_95", timing_markers=True)
    ax.axhline(floor_average, color=FLOOR_COLOUR, linestyle="--", label="noise floor")
    _ceiling(ax, summary.attrs.get("ceiling"), vertical=False)
    ax.set_xscale("log")
    if summary.attrs.get("retrain_seconds_known", True):
        ax.axvline(1.0, color="k", linestyle=":", label="retraining")
        ax.set_xlabel("unlearning wall time / retraining wall time per model (mean over "
                      f"models)\n{_cost_note(summary)}", fontsize=8)
    else:
        ax.set_xlabel("unlearning wall time per model, seconds (mean over models; the published "
                      f"models' training time is unknown)\n{_cost_note(summary)}", fontsize=8)
    ax.set_ylabel("average_95 KLOM (scored oracles)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(f"{forget_set}: KLOM against unlearning cost\n"
                    "(large markers: selected settings; small: every setting)")
    figure.tight_layout()
    return figure


def accuracy_vs_klom_figure(summary: pd.DataFrame, oracle_accuracy: dict, floor_average: float,
                            forget_set: str):
    """Forget and validation accuracy of every setting against its average_95 KLOM."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for ax, column, title in zip(axes, ("forget_accuracy", "val_accuracy"),
                                 ("forget-set accuracy", "validation accuracy")):
        _scatter_settings(ax, summary, "average_95", column)
        if np.isfinite(oracle_accuracy.get(column, np.nan)):
            ax.axhline(oracle_accuracy[column], color=ORACLE_COLOUR, linestyle="--",
                       label="oracles (target)")
        ax.axvline(floor_average, color=FLOOR_COLOUR, linestyle="--", label="noise floor")
        _ceiling(ax, summary.attrs.get("ceiling"))
        ax.set_xlabel("average_95 KLOM (scored oracles)")
        ax.set_ylabel(title)
        ax.set_title(title)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(f"{forget_set}: accuracy against KLOM (large markers: selected settings)")
    figure.tight_layout()
    return figure
