"""Paper tables: honest setting selection, intervals over models, Markdown and LaTeX tables.

Selection. Published benchmarks pick each method's setting by its KLOM against
the very oracles they then report against; over a large grid that minimum is
biased low (the winner's curse), and more so the larger the grid. Here each
(forget set, method entry)'s setting is the one with the lowest
`holdout_average_95`, its average_95 against the held-out oracles (oracles of
other seeds), and the tables report that setting's KLOM against the scored
oracles (`average_95`, `klom_p95`), which played no part in the choice. Ties
go to the smaller config_id; a setting whose every run diverged (NaN) is chosen
only when all are NaN.

Diagnostics. A method with `Method.diagnostic` (oracle_matching) fine-tunes
towards the held-out oracles, so its held-out KLOM is no honest criterion
either: it is exempt, selected by its scored average_95 (the published, biased
practice), and flagged in every table as an upper-bound diagnostic, not a
competitor.

Intervals. Each cell's interval comes from resampling models, but not with
replacement: a resample with duplicated models has lumpier margin histograms,
so its KLOM is biased upwards (same-distribution simulation, 100 vs 100
models: p95 0.65, resampled p95 centred on 1.3, so that the percentile
bootstrap interval [1.2, 1.5] misses its own estimate; tests/test_paper.py).
Instead, `resamples` times, a fraction `delete_fraction` (default one half) of
the unlearned models and of the oracles is left out at random (numpy
default_rng, a seed derived from `paper.resample_seed`, the forget set and the
method entry), every point's KLOM is recomputed (klomflow.klom.klom_per_point)
and the forget, retain and validation 95th percentiles and their mean are
taken. This is the delete-d jackknife (Shao and Wu 1989; half-sampling at the
default): the spread of these values, scaled by sqrt((1 - f) / f) for the
fraction f left out, estimates the spread of the full-sample figure. The
interval is the estimate plus the scaled 2.5th and 97.5th percentiles of the
centred resampled values, kept within KLOM's range (0 to ln(1/eps)); the
standard error is the scaled standard deviation. It errs on the safe side: in same-distribution
simulations (40 and 100 models a side) its standard error is 1.3 to 2.2 times
the spread of the estimate over independent redraws of the models (KLOM's
bins follow the extreme margins, which makes it rougher than a smooth
statistic). It shows how much a cell moves with the draw of models, not with
the draw of the forget set.

`paper.interval: bootstrap` gives the with-replacement bootstrap instead (each
side's models drawn with replacement, percentile interval, standard error the
spread of the resampled values), for comparison with tables that used it; the
tables then say so, and its interval can miss its own estimate, as above.
"""

from __future__ import annotations

import math
import subprocess
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from klomflow.klom import SPLITS, KlomOptions, average_95, finite_models, klom_per_point, summarise

# Bump when a change here can change an interval file (a rerun trigger of the resample rules).
VERSION = "1"
NOISE_FLOOR = "oracle_holdout"  # = klomflow.tables.NOISE_FLOOR (tables imports this module)
NOISE_FLOOR_LABEL = "noise floor (oracle_holdout)"
# What the selected setting of a row was chosen by (klom.parquet's `selected_by`).
SELECTED_BY_HOLDOUT = "holdout_average_95"
SELECTED_BY_SCORED = "average_95 (diagnostic)"
SELECTED_BY_REFERENCE = "reference"
# The four numbers of a cell group: p95 per split and their mean.
STATISTICS = ("forget_p95", "retain_p95", "val_p95", "average_95")
STATISTIC_LABELS = {"forget_p95": "forget", "retain_p95": "retain", "val_p95": "validation",
                    "average_95": "average_95"}
INTERVAL_PERCENTILES = (2.5, 97.5)
# paper.interval: how models are resampled for the intervals (see the module docstring).
INTERVAL_SCHEMES = ("jackknife", "bootstrap")
# Packages whose versions every Parquet file written here records.
PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "torch", "torchvision",
            "snakemake", "matplotlib")
CLASS_ACCURACY_COLUMNS = ("forget_class_train_accuracy", "other_classes_train_accuracy",
                          "forget_class_val_accuracy", "other_classes_val_accuracy")
CLASS_ACCURACY_LABELS = {
    "forget_class_train_accuracy": "forget class (train)",
    "other_classes_train_accuracy": "other classes (train)",
    "forget_class_val_accuracy": "forget class (val)",
    "other_classes_val_accuracy": "other classes (val)",
}


# --- statistics and selection -------------------------------------------------------------


def split_statistics(values, splits) -> dict:
    """forget/retain/val 95th percentiles of per-point KLOM `values` and their mean.

    Computed exactly as klom.parquet's `klom_p95` (klomflow.klom.summarise).
    """
    values = np.asarray(values, dtype=np.float64)
    splits = np.asarray(splits)
    p95 = {split: summarise(values[splits == split])["klom_p95"] for split in SPLITS}
    return {f"{split}_p95": p95[split] for split in SPLITS} | {"average_95": average_95(p95)}


def points_statistics(points: pd.DataFrame) -> dict:
    """split_statistics of a per-point KLOM file (columns point, split, klom)."""
    return split_statistics(points["klom"].to_numpy(), points["split"].to_numpy())


def _sort_key(value: float, config_id: str):
    missing = value is None or math.isnan(value)
    return (missing, 0.0 if missing else value, config_id)


def select_config_id(candidates, diagnostic: bool) -> str:
    """config_id of the selected setting among `candidates`.

    candidates: iterable of dicts with config_id, average_95 (scored) and
    holdout_average_95. Competitors go by holdout_average_95, diagnostics by
    average_95; the lowest wins, ties to the smaller config_id, NaN last.
    """
    criterion = "average_95" if diagnostic else "holdout_average_95"
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no setting to select from")
    return min(candidates, key=lambda c: _sort_key(c[criterion], c["config_id"]))["config_id"]


def add_selection_columns(table: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """klom.parquet with the selection: average_95, holdout_klom_*, holdout_average_95, selected.

    table: one row per (forget_set, method, config_id, split) against the scored
    oracles; holdout: the same rows against the held-out oracles (none for the
    noise floor, which is made of the held-out oracles).
    """
    keys = ["forget_set", "method", "config_id"]
    table = table.copy()
    if len(table) == 0:
        return table
    for column in ("klom_mean", "klom_p95"):
        table[f"holdout_{column}"] = np.nan
    if len(holdout):
        merged = table[keys + ["split"]].merge(
            holdout[keys + ["split", "klom_mean", "klom_p95"]], on=keys + ["split"], how="left")
        table["holdout_klom_mean"] = merged["klom_mean"].to_numpy()
        table["holdout_klom_p95"] = merged["klom_p95"].to_numpy()
    setting_average = {}
    for key, rows in table.groupby(keys, sort=True):
        by_split = {split: np.nan for split in SPLITS}
        holdout_split = dict(by_split)
        by_split |= dict(zip(rows["split"], rows["klom_p95"]))
        holdout_split |= dict(zip(rows["split"], rows["holdout_klom_p95"]))
        setting_average[key] = (average_95(by_split), average_95(holdout_split))
    index = list(zip(*(table[key] for key in keys)))
    table["average_95"] = [setting_average[key][0] for key in index]
    table["holdout_average_95"] = [setting_average[key][1] for key in index]
    table["selected"] = False
    table["selected_by"] = ""
    for (_, method), rows in table.groupby(["forget_set", "method"], sort=True):
        if method == NOISE_FLOOR:
            table.loc[rows.index, ["selected", "selected_by"]] = [True, SELECTED_BY_REFERENCE]
            continue
        diagnostic = bool(rows["diagnostic"].iloc[0]) if "diagnostic" in rows else False
        settings = rows.drop_duplicates("config_id")
        chosen = select_config_id(settings.to_dict("records"), diagnostic)
        chosen_rows = rows.index[rows["config_id"] == chosen]
        table.loc[chosen_rows, "selected"] = True
        table.loc[rows.index, "selected_by"] = (SELECTED_BY_SCORED if diagnostic
                                                else SELECTED_BY_HOLDOUT)
    return table


# --- intervals ------------------------------------------------------------------------------


def deleted_count(n_models: int, delete_fraction: float) -> int:
    """Models left out per resample: at least one, and at least two kept where n_models > 2."""
    return int(min(max(1, round(delete_fraction * n_models)), max(n_models - 2, 1)))


def resampled_statistics(unlearned, oracle, splits, options: KlomOptions, n_resamples: int,
                         delete_fraction: float, seed: int,
                         scheme: str = "jackknife") -> tuple[np.ndarray, float]:
    """STATISTICS recomputed on resampled models.

    jackknife: a random fraction of each side's models left out; bootstrap: each
    side's models drawn with replacement (delete_fraction unused).
    unlearned [n_unlearned, n_points] and oracle [n_oracle, n_points] margins.
    Returns ([n_resamples, 4] values, the fraction of models actually left out,
    NaN for the bootstrap).
    """
    if scheme not in INTERVAL_SCHEMES:
        raise ValueError(f"paper.interval: unknown scheme {scheme!r}; known: {INTERVAL_SCHEMES}")
    unlearned = np.asarray(unlearned)
    oracle = np.asarray(oracle)
    n_u, n_o = len(unlearned), len(oracle)
    d_u, d_o = deleted_count(n_u, delete_fraction), deleted_count(n_o, delete_fraction)
    rng = np.random.default_rng(seed)

    def draw(n: int, deleted: int) -> np.ndarray:
        if scheme == "bootstrap":
            return np.sort(rng.integers(0, n, size=n))
        return np.sort(rng.choice(n, size=n - deleted, replace=False))

    results = np.empty((n_resamples, len(STATISTICS)))
    for resample in range(n_resamples):
        u = unlearned[draw(n_u, d_u)]
        o = oracle[draw(n_o, d_o)]
        statistics = split_statistics(klom_per_point(u, o, options), splits)
        results[resample] = [statistics[name] for name in STATISTICS]
    deleted_fraction = np.nan if scheme == "bootstrap" else (d_u + d_o) / (n_u + n_o)
    return results, deleted_fraction


def jackknife_interval(estimate, resampled, deleted_fraction: float, upper: float = np.inf):
    """(low, high, standard error) from delete-d resamples (columns: statistics).

    Scaled by sqrt((1 - f) / f): the spread of a statistic over subsets that
    leave out a fraction f of the models, relative to its full-sample spread.
    The interval is clipped to [0, upper], KLOM's range (upper = ln(1 / eps)).
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    resampled = np.asarray(resampled, dtype=np.float64)
    scale = math.sqrt((1 - deleted_fraction) / deleted_fraction)
    centred = resampled - resampled.mean(axis=0)
    low_offset, high_offset = np.percentile(centred, INTERVAL_PERCENTILES, axis=0)
    low = np.maximum(estimate + scale * low_offset, 0.0)
    high = np.minimum(estimate + scale * high_offset, upper)
    return low, high, scale * _spread(resampled)


def bootstrap_interval(resampled):
    """(low, high, standard error): percentiles and spread of with-replacement resamples."""
    resampled = np.asarray(resampled, dtype=np.float64)
    low, high = np.percentile(resampled, INTERVAL_PERCENTILES, axis=0)
    return low, high, _spread(resampled)


def _spread(resampled: np.ndarray) -> np.ndarray:
    """Standard deviation of each column over the resamples; NaN from a single resample."""
    if len(resampled) > 1:
        return resampled.std(axis=0, ddof=1)
    return np.full(resampled.shape[1], np.nan)


def resample_seed(base_seed: int, forget_set: str, method: str) -> int:
    """A seed per (forget set, method entry): adding a method leaves other intervals alone."""
    from klomflow.config import model_seed

    return model_seed(base_seed, "klom_intervals", forget_set, method)


def interval_entry(forget_set: str, method: str, diagnostic: bool, candidates, load_margins,
                   oracle_margins, splits, options: KlomOptions, n_resamples: int,
                   delete_fraction: float, base_seed: int,
                   scheme: str = "jackknife") -> pd.DataFrame:
    """Select one method entry's setting on one forget set and resample its KLOM.

    candidates: list of dicts (config_id, scored: per-point KLOM frame against
    the scored oracles, holdout: the same against the held-out oracles, or None
    for the noise floor); load_margins(config_id) -> unlearned margins
    [n_models, n_points] (NaN rows are diverged runs, left out as in KLOM).
    Returns one row per statistic of the selected setting.
    """
    summaries = []
    for candidate in candidates:
        scored = points_statistics(candidate["scored"])
        holdout = (points_statistics(candidate["holdout"]) if candidate.get("holdout") is not None
                   else {"average_95": np.nan})
        summaries.append({"config_id": candidate["config_id"], "statistics": scored,
                          "average_95": scored["average_95"],
                          "holdout_average_95": holdout["average_95"]})
    if method == NOISE_FLOOR:
        chosen, selected_by = summaries[0], SELECTED_BY_REFERENCE
    else:
        config_id = select_config_id(summaries, diagnostic)
        chosen = next(s for s in summaries if s["config_id"] == config_id)
        selected_by = SELECTED_BY_SCORED if diagnostic else SELECTED_BY_HOLDOUT
    margins = np.asarray(load_margins(chosen["config_id"]))
    finite = finite_models(margins)
    seed = resample_seed(base_seed, forget_set, method)
    estimate = np.array([chosen["statistics"][name] for name in STATISTICS])
    if finite.sum() >= 2:
        resampled, deleted = resampled_statistics(margins[finite], oracle_margins, splits, options,
                                                  n_resamples, delete_fraction, seed, scheme)
        if scheme == "bootstrap":
            low, high, error = bootstrap_interval(resampled)
        else:
            # KLOM never exceeds ln(1 / eps): sum p ln(p / q) <= -sum p ln(eps).
            low, high, error = jackknife_interval(estimate, resampled, deleted,
                                                  upper=math.log(1 / options.eps))
        centre = resampled.mean(axis=0)
    else:  # no interval from fewer than two models
        low = high = error = centre = np.full(len(STATISTICS), np.nan)
        deleted = np.nan
    rows = []
    for k, statistic in enumerate(STATISTICS):
        rows.append({
            "forget_set": forget_set, "method": method, "config_id": chosen["config_id"],
            "diagnostic": bool(diagnostic), "selected_by": selected_by,
            "holdout_average_95": chosen["holdout_average_95"], "n_settings": len(summaries),
            "statistic": statistic, "estimate": float(estimate[k]),
            "low": float(low[k]), "high": float(high[k]), "standard_error": float(error[k]),
            "resampled_mean": float(centre[k]), "interval": scheme,
            "n_resamples": int(n_resamples),
            "deleted_fraction": float(deleted), "seed": int(seed),
            "n_unlearned": int(finite.sum()), "n_oracle": int(len(oracle_margins)),
        })
    return pd.DataFrame(rows)


# --- class accuracy ---------------------------------------------------------------------------


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


# --- provenance -------------------------------------------------------------------------------


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the klomflow checkout, or None outside a git checkout."""
    folder = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_versions() -> dict:
    import klomflow
    from klomflow import klom, privacy, training
    from klomflow.methods import METHODS

    return {"klomflow": klomflow.__version__, "git_commit": git_commit(),
            "training_version": training.VERSION, "klom_version": klom.VERSION,
            "privacy_version": privacy.VERSION,
            "method_versions": {name: METHODS[name].version for name in sorted(METHODS)}}


def device_description() -> dict:
    """Where this job ran, and the accelerator the training jobs pick when present."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    return {"job_device": "cuda" if cuda else "cpu", "platform": platform.platform(),
            "machine": platform.machine(), "cuda_available": cuda,
            "cuda_device": torch.cuda.get_device_name(0) if cuda else None}


def seeds_of(config: dict) -> dict:
    """Every seed behind a results table: models (derived from base_seed), the resamples."""
    from klomflow.config import training_seed

    models = config["models"]
    n_oracle = models["n_oracles"] + models["n_holdout_oracles"]
    oracles = {}
    for forget_set in sorted(config["forget_sets"]):
        seeds = [training_seed(config, "oracle", forget_set, k) for k in range(n_oracle)]
        oracles[forget_set] = {"scored": seeds[:models["n_oracles"]],
                               "holdout": seeds[models["n_oracles"]:]}
    return {
        "base_seed": models["base_seed"],
        "original": [training_seed(config, "original", None, k)
                     for k in range(models["n_originals"])],
        "oracle": oracles,
        "unlearning": "model_seed(base_seed, 'unlearn', forget_set, method, config_id, index); "
                      "each run's seed is in results/runs/",
        "resample_seed": config["paper"]["resample_seed"],
    }


def provenance(config: dict) -> dict:
    """Metadata every Parquet file of the paper tables carries (deterministic on one machine)."""
    from klomflow.config import stable_hash

    return {"config": config, "config_hash": stable_hash(config, length=16),
            "code_version": code_versions(), "packages": package_versions(),
            "device": device_description(), "seeds": seeds_of(config)}


# --- tables -----------------------------------------------------------------------------------


def _number(value, digits=3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _latex(text: str) -> str:
    return (str(text).replace("\\", "\\textbackslash{}").replace("_", "\\_")
            .replace("%", "\\%").replace("&", "\\&").replace("#", "\\#"))


def _row_order(methods, diagnostic: dict) -> list:
    """Noise floor first, then competitors, then diagnostics, each alphabetically."""
    return sorted(methods, key=lambda m: (m != NOISE_FLOOR, bool(diagnostic.get(m)), m))


def _klom_rows(frame: pd.DataFrame, forget_sets, label, cell_text, missing: str):
    """(method, [label, one cell per forget set and statistic]) per row of the KLOM table.

    label(method, is_diagnostic) names the row; cell_text(cell) formats an interval
    row of `frame`; `missing` stands where a method has no result on a forget set.
    """
    diagnostic = dict(zip(frame["method"], frame["diagnostic"]))
    cells = {(r.forget_set, r.method, r.statistic): r for r in frame.itertuples()}
    for method in _row_order(frame["method"].unique(), diagnostic):
        row = [label(method, diagnostic.get(method))]
        for forget_set in forget_sets:
            for name in STATISTICS:
                cell = cells.get((forget_set, method, name))
                row.append(missing if cell is None else cell_text(cell))
        yield method, row


def klom_table_frame(klom_table: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The paper KLOM table in long form, checked against klom.parquet's selection."""
    chosen = klom_table[klom_table["selected"]].drop_duplicates(["forget_set", "method"])
    expected = dict(zip(zip(chosen["forget_set"], chosen["method"]), chosen["config_id"]))
    found = intervals.drop_duplicates(["forget_set", "method"])
    for forget_set, method, config_id in zip(found["forget_set"], found["method"],
                                             found["config_id"]):
        if expected.get((forget_set, method)) != config_id:
            raise ValueError(
                f"intervals of {forget_set}/{method} used setting {config_id}, but klom.parquet "
                f"selects {expected.get((forget_set, method))}: stale files, rerun the workflow")
    missing = set(expected) - set(zip(found["forget_set"], found["method"]))
    if missing:
        raise ValueError(f"no intervals for {sorted(missing)}")
    params = dict(zip(zip(chosen["forget_set"], chosen["method"]), chosen["params"]))
    frame = intervals.copy()
    frame["params"] = [params[key] for key in zip(frame["forget_set"], frame["method"])]
    order = {name: k for k, name in enumerate(STATISTICS)}
    frame["statistic_order"] = frame["statistic"].map(order)
    frame = frame.sort_values(["forget_set", "method", "statistic_order"])
    return frame.drop(columns="statistic_order").reset_index(drop=True)


def _klom_context(klom_table: pd.DataFrame, frame: pd.DataFrame) -> dict:
    first = klom_table.iloc[0]
    floor = klom_table[klom_table["method"] == NOISE_FLOOR]
    return {
        "dataset": first["dataset"], "model": first["model"],
        "binning": first["klom_binning"], "direction": first["klom_direction"],
        "bins": int(first["klom_bins"]),
        "n_oracle": int(floor["n_oracle"].iloc[0]) if len(floor) else int(first["n_oracle"]),
        "n_holdout": int(floor["n_unlearned"].iloc[0]) if len(floor) else None,
        "n_resamples": int(frame["n_resamples"].iloc[0]) if len(frame) else 0,
        "delete_percent": (f"{100 * np.nanmedian(frame['deleted_fraction']):.0f}%"
                           if len(frame) and frame["deleted_fraction"].notna().any() else "n/a"),
        "interval": (frame["interval"].iloc[0] if len(frame) and "interval" in frame
                     else "jackknife"),
    }


def klom_markdown(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_klom.md: methods (selected settings) x forget sets x (forget, retain, val, avg)."""
    context = _klom_context(klom_table, frame)
    forget_sets = sorted(frame["forget_set"].unique())
    cells = {(r.forget_set, r.method, r.statistic): r for r in frame.itertuples()}
    lines = [
        "# KLOM of each method's selected setting (95th percentile of per-point KLOM; "
        "lower is better)", "",
        f"Dataset `{context['dataset']}`, model `{context['model']}`; KLOM with "
        f"{context['bins']} bins, `{context['binning']}` binning, direction "
        f"`{context['direction']}`, against {context['n_oracle']} scored oracles per forget set.",
        "",
        "Selection: each (forget set, method)'s setting is the one with the lowest "
        "`holdout_average_95`, its average_95 against the held-out oracles (other seeds). "
        "The cells are that setting's KLOM against the scored oracles (`klom_p95`, "
        "`average_95` in klom.parquet), which played no part in the choice.",
        f"Each cell: estimate [95% interval] from {context['n_resamples']} resamples that "
        + (f"leave out {context['delete_percent']} of the unlearned models and of the oracles "
           "(delete-d jackknife, seeded; a with-replacement bootstrap is biased for KLOM, see "
           "klomflow/paper.py)." if context["interval"] == "jackknife" else
           "draw the unlearned models and the oracles with replacement (percentile bootstrap, "
           "seeded; duplicated models bias KLOM upwards, so an interval can miss its "
           "estimate, see klomflow/paper.py)."),
        f"`{NOISE_FLOOR}`: the held-out oracles scored against the scored oracles, the noise "
        "floor, the best any method can reach with this many models.",
        "† diagnostic: uses oracles (fine-tunes towards the held-out oracles), so it is exempt "
        "from the held-out selection: its setting is the best by scored average_95, the "
        "published practice, biased low. An upper bound, not a competitor.", "",
    ]
    header = ["method"]
    for forget_set in forget_sets:
        header += [f"{forget_set} {STATISTIC_LABELS[name]}" for name in STATISTICS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    rows = _klom_rows(
        frame, forget_sets,
        label=lambda method, is_diagnostic: ((NOISE_FLOOR_LABEL if method == NOISE_FLOOR
                                              else method) + (" †" if is_diagnostic else "")),
        cell_text=lambda cell: (f"{_number(cell.estimate)} [{_number(cell.low)}, "
                                f"{_number(cell.high)}]"),
        missing="–")
    for _, row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Selected settings", "",
              "| forget set | method | config_id | selected by | holdout_average_95 "
              "(selection) | average_95 (reported) | settings | n_unlearned | params |",
              "|---|---|---|---|---:|---:|---:|---:|---|"]
    settings = frame.drop_duplicates(["forget_set", "method"])
    for r in settings.sort_values(["forget_set", "method"]).itertuples():
        average = cells[(r.forget_set, r.method, "average_95")].estimate
        lines.append(f"| {r.forget_set} | {r.method} | {r.config_id} | {r.selected_by} | "
                     f"{_number(r.holdout_average_95)} | {_number(average)} | {r.n_settings} | "
                     f"{r.n_unlearned} | `{r.params}` |")
    lines.append("")
    return "\n".join(lines)


def klom_latex(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_klom.tex: the same table as a LaTeX tabular (booktabs)."""
    context = _klom_context(klom_table, frame)
    forget_sets = sorted(frame["forget_set"].unique())
    n_columns = 1 + len(STATISTICS) * len(forget_sets)
    lines = [
        "% KLOM of each method's selected setting (p95 of per-point KLOM; lower is better).",
        "% Selected by average_95 against the held-out oracles; reported against the scored "
        "oracles.",
        (f"% 95% intervals: delete-d jackknife, {context['n_resamples']} resamples leaving out "
         f"{context['delete_percent']} of the unlearned and oracle models."
         if context["interval"] == "jackknife" else
         f"% 95% intervals: percentile bootstrap, {context['n_resamples']} resamples drawing "
         "the unlearned and oracle models with replacement (biased upwards for KLOM)."),
        "% Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{l" + "r" * (n_columns - 1) + "}",
        "\\toprule",
    ]
    groups = " & ".join(f"\\multicolumn{{{len(STATISTICS)}}}{{c}}{{{_latex(f)}}}"
                        for f in forget_sets)
    lines.append(f" & {groups} \\\\")
    rules = " ".join(f"\\cmidrule(lr){{{2 + k * len(STATISTICS)}-{1 + (k + 1) * len(STATISTICS)}}}"
                     for k in range(len(forget_sets)))
    lines.append(rules)
    names = " & ".join(_latex(STATISTIC_LABELS[name]) for name in STATISTICS)
    lines.append("method & " + " & ".join([names] * len(forget_sets)) + " \\\\")
    lines.append("\\midrule")
    rows = _klom_rows(
        frame, forget_sets,
        label=lambda method, is_diagnostic: (("noise floor" if method == NOISE_FLOOR
                                              else _latex(method))
                                             + ("$^\\dagger$" if is_diagnostic else "")),
        cell_text=lambda cell: (f"{_number(cell.estimate)} {{\\scriptsize "
                                f"[{_number(cell.low)}, {_number(cell.high)}]}}"),
        missing="--")
    for method, row in rows:
        lines.append(" & ".join(row) + " \\\\")
        if method == NOISE_FLOOR:
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}",
              "% $^\\dagger$ diagnostic (uses oracles): selected by its scored average_95; "
              "an upper bound, not a competitor.", ""]
    return "\n".join(lines)


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


def _accuracy_order(methods, diagnostic: dict) -> list:
    head = [m for m in ("original", "oracle") if m in methods]
    rest = sorted((m for m in methods if m not in head),
                  key=lambda m: (bool(diagnostic.get(m)), m))
    return head + rest


def _percent(mean, std) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    spread = "n/a" if std is None or not np.isfinite(std) else f"{100 * std:.2f}"
    return f"{100 * mean:.2f} ± {spread}"


def accuracy_markdown(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_accuracy.md: forget-class and other-class accuracy on class forget sets."""
    lines = ["# Accuracy on whole-class forget sets (%, mean ± std over seeds)", ""]
    if len(frame) == 0:
        return "\n".join(lines + ["No forget set of kind `class` in this configuration.", ""])
    diagnostic = dict(zip(klom_table["method"], klom_table["diagnostic"]))
    lines += ["As in the PBU paper's table: accuracy on the forgotten class and on the other "
              "classes, on training and on validation points, for the original models, the "
              "oracles (retrained without the class) and each method's selected setting "
              "(the same setting as in paper_klom.md). A point is correct when its margin is "
              "positive. Diverged runs are left out (column n).", "",
              "† diagnostic (uses oracles).", ""]
    forget_sets = sorted(frame["forget_set"].unique())
    cells = {(r["forget_set"], r["method"]): r for r in frame.to_dict("records")}
    header = ["model"]
    for forget_set in forget_sets:
        label = int(frame.loc[frame["forget_set"] == forget_set, "forget_label"].iloc[0])
        header += [f"{forget_set} (class {label}) {CLASS_ACCURACY_LABELS[c]}"
                   for c in CLASS_ACCURACY_COLUMNS] + [f"{forget_set} n"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    for method in _accuracy_order(frame["method"].unique(), diagnostic):
        label = "oracle (retrained)" if method == "oracle" else method
        label += " †" if diagnostic.get(method) else ""
        row = [label]
        for forget_set in forget_sets:
            cell = cells.get((forget_set, method))
            if cell is None:
                row += ["–"] * (len(CLASS_ACCURACY_COLUMNS) + 1)
                continue
            row += [_percent(cell[f"{c}_mean"], cell[f"{c}_std"]) for c in CLASS_ACCURACY_COLUMNS]
            row.append(str(cell["n_models"]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def accuracy_latex(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    lines = ["% Accuracy on whole-class forget sets (%, mean $\\pm$ std over seeds).",
             "% Needs \\usepackage{booktabs}."]
    if len(frame) == 0:
        return "\n".join(lines + ["% No forget set of kind `class` in this configuration.", ""])
    diagnostic = dict(zip(klom_table["method"], klom_table["diagnostic"]))
    forget_sets = sorted(frame["forget_set"].unique())
    cells = {(r["forget_set"], r["method"]): r for r in frame.to_dict("records")}
    width = len(CLASS_ACCURACY_COLUMNS)
    lines += ["\\begin{tabular}{l" + "r" * (width * len(forget_sets)) + "}", "\\toprule"]
    groups = []
    for forget_set in forget_sets:
        label = int(frame.loc[frame["forget_set"] == forget_set, "forget_label"].iloc[0])
        groups.append(f"\\multicolumn{{{width}}}{{c}}{{{_latex(forget_set)} (class {label})}}")
    lines.append(" & " + " & ".join(groups) + " \\\\")
    lines.append(" ".join(f"\\cmidrule(lr){{{2 + k * width}-{1 + (k + 1) * width}}}"
                          for k in range(len(forget_sets))))
    names = " & ".join(_latex(CLASS_ACCURACY_LABELS[c]) for c in CLASS_ACCURACY_COLUMNS)
    lines.append("model & " + " & ".join([names] * len(forget_sets)) + " \\\\")
    lines.append("\\midrule")
    for method in _accuracy_order(frame["method"].unique(), diagnostic):
        label = "oracle (retrained)" if method == "oracle" else _latex(method)
        label += "$^\\dagger$" if diagnostic.get(method) else ""
        row = [label]
        for forget_set in forget_sets:
            cell = cells.get((forget_set, method))
            if cell is None:
                row += ["--"] * width
                continue
            row += [_percent(cell[f"{c}_mean"], cell[f"{c}_std"]).replace("±", "$\\pm$")
                    for c in CLASS_ACCURACY_COLUMNS]
        lines.append(" & ".join(row) + " \\\\")
        if method == "oracle":
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def write_text(path, text: str) -> None:
    """Write a table atomically (a killed job leaves no half-written table)."""
    from klomflow.io import atomic_path

    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)
