"""klom_summary.md: p95 per split of every method setting, per forget set, each setting named
by the hyperparameters that tell it apart, diagnostics marked and unchanged settings flagged.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from klomflow.metrics.klom import SPLITS, average_95
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.unlearning.methods.registry import REGISTRY

# --- the KLOM summary -------------------------------------------------------------------------


DIAGNOSTIC_NOTE = ("† diagnostic: uses oracles (fine-tunes towards the held-out oracles), so it "
                   "is exempt from the held-out selection: its setting is the best by scored "
                   "average_95, the published practice, biased low. An upper bound, not a "
                   "competitor.")


def _parameter_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def setting_hyperparameters(table: pd.DataFrame, specs: dict | None = None) -> dict:
    """{(method, config_id): the hyperparameters that tell the setting apart}, as `name=value`.

    Those in which the method entry's settings differ (its grid), and those set away
    from the implementation's defaults (`specs`: the config's method specs,
    klomflow.config.method_specs; the built-ins when None); "defaults" when none, "–" for
    the noise floor. Every value of a setting is in its `params`.
    """
    specs = REGISTRY if specs is None else specs
    settings = table.drop_duplicates(["method", "config_id"])
    params = {(r.method, r.config_id): json.loads(r.params) for r in settings.itertuples()}
    implementations = dict(zip(zip(settings["method"], settings["config_id"]),
                               settings["implementation"]))
    texts = {}
    for (method, config_id), values in params.items():
        if method == NOISE_FLOOR:
            texts[method, config_id] = "–"
            continue
        siblings = [other for (name, _), other in params.items() if name == method]
        spec = specs.get(implementations[method, config_id])
        defaults = spec.defaults if spec is not None else {}
        shown = [name for name, value in values.items()
                 if any(other.get(name) != value for other in siblings)
                 or name not in defaults or defaults[name] != value]
        texts[method, config_id] = (", ".join(f"{name}={_parameter_text(values[name])}"
                                              for name in shown) or "defaults")
    return texts


def unchanged_weights_notes(table: pd.DataFrame, selected_only: bool = False,
                            specs: dict | None = None) -> list[str]:
    """One sentence per setting whose method left some models' weights as they were.

    From klom.parquet's `n_unchanged` (klomflow.reporting.tables.unchanged_weights_counts); only
    the selected settings when `selected_only`; none for tables written before the column.
    `specs`: as for setting_hyperparameters.
    """
    if "n_unchanged" not in table:
        return []
    rows = table[table["n_unchanged"].fillna(0) > 0]
    if selected_only:
        rows = rows[rows["selected"]]
    hyperparameters = setting_hyperparameters(table, specs)
    notes = []
    for r in rows.drop_duplicates(["forget_set", "method", "config_id"]).sort_values(
            ["forget_set", "method", "config_id"]).itertuples():
        n_models = int(r.n_unlearned) + int(r.n_diverged)
        notes.append(f"{r.method} {r.config_id} ({hyperparameters[r.method, r.config_id]}) on "
                     f"{r.forget_set} changed no weight of {int(r.n_unchanged)} of its "
                     f"{n_models} models: those are the originals, as under do_nothing.")
    return notes


def summary_markdown(table: pd.DataFrame, specs: dict | None = None) -> str:
    """p95 per split and average_95, one row per method setting, per forget set.

    Each setting shows the hyperparameters that tell it apart (setting_hyperparameters,
    against the defaults of `specs`, the config's method specs) and every hyperparameter in
    a list at the end; diagnostics are marked †, settings that left models unchanged are
    flagged.
    """
    lines = ["# KLOM summary (95th percentile of per-point KLOM; lower is better)", ""]
    if len(table):
        first = table.iloc[0]
        lines.append(f"dataset `{first['dataset']}`, model `{first['model']}`, "
                     f"binning `{first['klom_binning']}`, direction `{first['klom_direction']}`, "
                     f"{first['klom_bins']} bins. `{NOISE_FLOOR}` is the noise floor: held-out "
                     f"oracles scored against the scored oracles. `shift/std`: per split, "
                     f"the median over points of |mean margin shift| / seed-to-seed std "
                     f"between these models and the oracles; KLOM saturates once it is a "
                     f"few units. `n_unchanged`: models the method left with every weight as "
                     f"it was, the originals, as under do_nothing.")
        lines += ["", DIAGNOSTIC_NOTE, ""]
    hyperparameters = setting_hyperparameters(table, specs) if len(table) else {}
    diagnostic = (dict(zip(table["method"], table["diagnostic"].astype(bool)))
                  if "diagnostic" in table else {})
    for forget_set, group in table.groupby("forget_set", sort=True):
        lines += [f"## {forget_set}", ""]
        if "forget_set_kind" in group:  # tables written before the column have no kind line
            kind, proxy = group["forget_set_kind"].iloc[0], group["forget_set_proxy"].iloc[0]
            lines += [f"kind `{kind}`" + (f", proxy `{proxy}`: a set chosen to be hard to "
                                          f"forget by a cheap surrogate; it bounds nothing"
                                          if isinstance(proxy, str) else ""), ""]
        lines += ["| method | config_id | hyperparameters | forget | retain | val | average_95 "
                  "| shift/std forget / retain / val | n_unlearned | n_diverged | n_unchanged |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        settings = sorted(group.groupby(["method", "config_id"]),
                          key=lambda item: (item[0][0] != NOISE_FLOOR,
                                            diagnostic.get(item[0][0], False), item[0]))
        for (method, config_id), rows in settings:
            p95 = dict(zip(rows["split"], rows["klom_p95"]))
            average = average_95({split: p95.get(split, np.nan) for split in SPLITS})
            shift = dict(zip(rows["split"], rows["median_shift_over_std"]))
            shifts = " / ".join(f"{shift.get(split, np.nan):.2f}" for split in SPLITS)
            unchanged = rows["n_unchanged"].iloc[0] if "n_unchanged" in rows else np.nan
            lines.append(
                f"| {method}{' †' if diagnostic.get(method) else ''} | {config_id} | "
                f"{hyperparameters[method, config_id]} | {p95.get('forget', np.nan):.3f} | "
                f"{p95.get('retain', np.nan):.3f} | {p95.get('val', np.nan):.3f} | "
                f"{average:.3f} | {shifts} | {rows['n_unlearned'].iloc[0]} | "
                f"{rows['n_diverged'].iloc[0]} | "
                f"{'–' if pd.isna(unchanged) else int(unchanged)} |"
            )
        lines.append("")
        notes = unchanged_weights_notes(group, specs=specs)
        lines += [f"- **Unchanged:** {note}" for note in notes] + ([""] if notes else [])
    if len(table):
        lines += ["## Settings", "",
                  "Every hyperparameter of each setting (its config_id is a hash of the "
                  "method and these values).", "",
                  "| method | config_id | implementation | hyperparameters |",
                  "|---|---|---|---|"]
        settings = table.drop_duplicates(["method", "config_id"]).sort_values(
            ["method", "config_id"])
        for r in settings[settings["method"] != NOISE_FLOOR].itertuples():
            lines.append(f"| {r.method} | {r.config_id} | {r.implementation} | `{r.params}` |")
        lines.append("")
    return "\n".join(lines)

