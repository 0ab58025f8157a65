"""Markdown and LaTeX: every table a person reads.

klom_summary.md (summary_markdown), and the paper tables paper_klom.{md,tex}
and paper_accuracy.{md,tex}, each pair rendered from one long-form frame
(klomflow.reporting.selection.klom_table_frame,
klomflow.reporting.tables.accuracy_table_frame) by one row builder, so that the Markdown
and the LaTeX table cannot disagree.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from klomflow.metrics.klom import SPLITS, average_95
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.selection import STATISTICS
from klomflow.reporting.tables import CLASS_ACCURACY_COLUMNS
from klomflow.unlearning.methods.registry import REGISTRY

NOISE_FLOOR_LABEL = f"noise floor ({NOISE_FLOOR})"
STATISTIC_LABELS = {"forget_p95": "forget", "retain_p95": "retain", "val_p95": "validation",
                    "average_95": "average_95"}
CLASS_ACCURACY_LABELS = {
    "forget_class_train_accuracy": "forget class (train)",
    "other_classes_train_accuracy": "other classes (train)",
    "forget_class_val_accuracy": "forget class (val)",
    "other_classes_val_accuracy": "other classes (val)",
}


# --- the KLOM summary -------------------------------------------------------------------------


DIAGNOSTIC_NOTE = ("† diagnostic: uses oracles (fine-tunes towards the held-out oracles), so it "
                   "is exempt from the held-out selection: its setting is the best by scored "
                   "average_95, the published practice, biased low. An upper bound, not a "
                   "competitor.")


def _parameter_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def setting_hyperparameters(table: pd.DataFrame) -> dict:
    """{(method, config_id): the hyperparameters that tell the setting apart}, as `name=value`.

    Those in which the method entry's settings differ (its grid), and those set away
    from the implementation's defaults (klomflow.unlearning.methods.registry); "defaults" when
    none, "–" for the noise floor. Every value of a setting is in its `params`.
    """
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
        spec = REGISTRY.get(implementations[method, config_id])
        defaults = spec.defaults if spec is not None else {}
        shown = [name for name, value in values.items()
                 if any(other.get(name) != value for other in siblings)
                 or name not in defaults or defaults[name] != value]
        texts[method, config_id] = (", ".join(f"{name}={_parameter_text(values[name])}"
                                              for name in shown) or "defaults")
    return texts


def unchanged_weights_notes(table: pd.DataFrame, selected_only: bool = False) -> list[str]:
    """One sentence per setting whose method left some models' weights as they were.

    From klom.parquet's `n_unchanged` (klomflow.reporting.tables.unchanged_weights_counts); only
    the selected settings when `selected_only`; none for tables written before the column.
    """
    if "n_unchanged" not in table:
        return []
    rows = table[table["n_unchanged"].fillna(0) > 0]
    if selected_only:
        rows = rows[rows["selected"]]
    hyperparameters = setting_hyperparameters(table)
    notes = []
    for r in rows.drop_duplicates(["forget_set", "method", "config_id"]).sort_values(
            ["forget_set", "method", "config_id"]).itertuples():
        n_models = int(r.n_unlearned) + int(r.n_diverged)
        notes.append(f"{r.method} {r.config_id} ({hyperparameters[r.method, r.config_id]}) on "
                     f"{r.forget_set} changed no weight of {int(r.n_unchanged)} of its "
                     f"{n_models} models: those are the originals, as under do_nothing.")
    return notes


def summary_markdown(table: pd.DataFrame) -> str:
    """p95 per split and average_95, one row per method setting, per forget set.

    Each setting shows the hyperparameters that tell it apart (setting_hyperparameters)
    and every hyperparameter in a list at the end; diagnostics are marked †, settings
    that left models unchanged are flagged.
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
    hyperparameters = setting_hyperparameters(table) if len(table) else {}
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
        notes = unchanged_weights_notes(group)
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


# --- shared pieces ----------------------------------------------------------------------------


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _markdown_head(header) -> list[str]:
    """A Markdown table's header and its rule: the first column left, the others right."""
    return [_markdown_row(header), "|---|" + "---:|" * (len(header) - 1)]


def _latex_head(first: str, groups, names) -> list[str]:
    """A booktabs tabular's opening: one column group per title in `groups`, each over `names`.

    `groups` and `names` are LaTeX already.
    """
    width = len(names)
    titles = " & ".join(f"\\multicolumn{{{width}}}{{c}}{{{group}}}" for group in groups)
    rules = " ".join(f"\\cmidrule(lr){{{2 + k * width}-{1 + (k + 1) * width}}}"
                     for k in range(len(groups)))
    return ["\\begin{tabular}{l" + "r" * (width * len(groups)) + "}", "\\toprule",
            f" & {titles} \\\\", rules,
            f"{first} & " + " & ".join([" & ".join(names)] * len(groups)) + " \\\\",
            "\\midrule"]


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


# --- the paper KLOM table ------------------------------------------------------------------


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


def proxy_note(klom_table: pd.DataFrame) -> str | None:
    """The sentence that says which forget sets are worst-case proxies, or None."""
    if "forget_set_proxy" not in klom_table:  # tables from before the column
        return None
    sets = klom_table.drop_duplicates("forget_set").sort_values("forget_set")
    proxies = [f"{r.forget_set} ({r.forget_set_proxy})" for r in sets.itertuples()
               if isinstance(r.forget_set_proxy, str)]
    if not proxies:
        return None
    return (f"Worst-case proxy forget sets: {', '.join(proxies)}. Chosen to be hard to forget "
            "by a cheap surrogate of do-nothing forget KLOM (or, bilevel, Fan et al.'s forget "
            "loss); a method's KLOM on them bounds nothing.")


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
           "klomflow/reporting/selection.py)." if context["interval"] == "jackknife" else
           "draw the unlearned models and the oracles with replacement (percentile bootstrap, "
           "seeded; duplicated models bias KLOM upwards, so an interval can miss its "
           "estimate, see klomflow/reporting/selection.py)."),
        f"`{NOISE_FLOOR}`: the held-out oracles scored against the scored oracles, the noise "
        "floor, the best any method can reach with this many models.",
        DIAGNOSTIC_NOTE, "",
    ]
    if proxy_note(klom_table):
        lines += [proxy_note(klom_table), ""]
    lines += _markdown_head(["method"] + [f"{forget_set} {STATISTIC_LABELS[name]}"
                                          for forget_set in forget_sets for name in STATISTICS])
    rows = _klom_rows(
        frame, forget_sets,
        label=lambda method, is_diagnostic: ((NOISE_FLOOR_LABEL if method == NOISE_FLOOR
                                              else method) + (" †" if is_diagnostic else "")),
        cell_text=lambda cell: (f"{_number(cell.estimate)} [{_number(cell.low)}, "
                                f"{_number(cell.high)}]"),
        missing="–")
    lines += [_markdown_row(row) for _, row in rows]
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
    notes = unchanged_weights_notes(klom_table, selected_only=True)
    lines += [f"- **Unchanged:** {note}" for note in notes] + ([""] if notes else [])
    return "\n".join(lines)


def klom_latex(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_klom.tex: the same table as a LaTeX tabular (booktabs)."""
    context = _klom_context(klom_table, frame)
    forget_sets = sorted(frame["forget_set"].unique())
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
    ]
    lines += _latex_head("method", [_latex(f) for f in forget_sets],
                         [_latex(STATISTIC_LABELS[name]) for name in STATISTICS])
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
              "an upper bound, not a competitor."]
    if proxy_note(klom_table):
        lines.append(f"% {proxy_note(klom_table)}")
    lines += [f"% Unchanged: {_latex(note)}"
              for note in unchanged_weights_notes(klom_table, selected_only=True)]
    lines.append("")
    return "\n".join(lines)


# --- the paper accuracy table --------------------------------------------------------------


def _accuracy_order(methods, diagnostic: dict) -> list:
    """Original models, oracles, then competitors, then diagnostics, each alphabetically."""
    head = [m for m in ("original", "oracle") if m in methods]
    rest = sorted((m for m in methods if m not in head),
                  key=lambda m: (bool(diagnostic.get(m)), m))
    return head + rest


def _percent(mean, std) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    spread = "n/a" if std is None or not np.isfinite(std) else f"{100 * std:.2f}"
    return f"{100 * mean:.2f} ± {spread}"


def _class_labels(frame: pd.DataFrame) -> dict:
    """{class forget set: its label}, forget sets in table order."""
    return {forget_set: int(frame.loc[frame["forget_set"] == forget_set, "forget_label"].iloc[0])
            for forget_set in sorted(frame["forget_set"].unique())}


def _accuracy_rows(frame: pd.DataFrame, klom_table: pd.DataFrame, label, percent, missing: str,
                   count: bool):
    """(method, [label, cells per class forget set]) per row of the accuracy table.

    label(method, is_diagnostic) names the row; percent(text) adapts a "mean ± std"
    cell; `missing` stands where a model group has no result on a forget set; count
    adds the number of models after each forget set's accuracies.
    """
    diagnostic = dict(zip(klom_table["method"], klom_table["diagnostic"]))
    cells = {(r["forget_set"], r["method"]): r for r in frame.to_dict("records")}
    width = len(CLASS_ACCURACY_COLUMNS) + int(count)
    for method in _accuracy_order(frame["method"].unique(), diagnostic):
        row = [label(method, diagnostic.get(method))]
        for forget_set in _class_labels(frame):
            cell = cells.get((forget_set, method))
            if cell is None:
                row += [missing] * width
                continue
            row += [percent(_percent(cell[f"{c}_mean"], cell[f"{c}_std"]))
                    for c in CLASS_ACCURACY_COLUMNS]
            row += [str(cell["n_models"])] if count else []
        yield method, row


def accuracy_markdown(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_accuracy.md: forget-class and other-class accuracy on class forget sets."""
    lines = ["# Accuracy on whole-class forget sets (%, mean ± std over seeds)", ""]
    if len(frame) == 0:
        return "\n".join(lines + ["No forget set of kind `class` in this configuration.", ""])
    lines += ["As in the PBU paper's table: accuracy on the forgotten class and on the other "
              "classes, on training and on validation points, for the original models, the "
              "oracles (retrained without the class) and each method's selected setting "
              "(the same setting as in paper_klom.md). A point is correct when the argmax of "
              "its logits is its label (top-1; for models imported without logits, when its "
              "margin is positive). Diverged runs are left out (column n).", "",
              "† diagnostic (uses oracles).", ""]
    header = ["model"]
    for forget_set, label in _class_labels(frame).items():
        header += [f"{forget_set} (class {label}) {CLASS_ACCURACY_LABELS[c]}"
                   for c in CLASS_ACCURACY_COLUMNS] + [f"{forget_set} n"]
    lines += _markdown_head(header)
    rows = _accuracy_rows(
        frame, klom_table,
        label=lambda method, is_diagnostic: (("oracle (retrained)" if method == "oracle"
                                              else method) + (" †" if is_diagnostic else "")),
        percent=lambda text: text, missing="–", count=True)
    lines += [_markdown_row(row) for _, row in rows]
    lines.append("")
    return "\n".join(lines)


def accuracy_latex(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_accuracy.tex: the same table as a LaTeX tabular (booktabs), without the counts."""
    lines = ["% Accuracy on whole-class forget sets (%, mean $\\pm$ std over seeds).",
             "% Needs \\usepackage{booktabs}."]
    if len(frame) == 0:
        return "\n".join(lines + ["% No forget set of kind `class` in this configuration.", ""])
    lines += _latex_head("model", [f"{_latex(forget_set)} (class {label})"
                                   for forget_set, label in _class_labels(frame).items()],
                         [_latex(CLASS_ACCURACY_LABELS[c]) for c in CLASS_ACCURACY_COLUMNS])
    rows = _accuracy_rows(
        frame, klom_table,
        label=lambda method, is_diagnostic: (("oracle (retrained)" if method == "oracle"
                                              else _latex(method))
                                             + ("$^\\dagger$" if is_diagnostic else "")),
        percent=lambda text: text.replace("±", "$\\pm$"), missing="--", count=False)
    for method, row in rows:
        lines.append(" & ".join(row) + " \\\\")
        if method == "oracle":
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)
