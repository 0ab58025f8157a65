"""Markdown and LaTeX of the paper tables paper_klom.{md,tex} and paper_accuracy.{md,tex},
each pair rendered from one long-form frame (klomflow.reporting.selection.klom_table_frame,
klomflow.reporting.tables.accuracy_table_frame) by one row builder, so that the Markdown
and the LaTeX table cannot disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.reporting.markup import (
    CLASS_ACCURACY_LABELS,
    STATISTIC_LABELS,
    interval_text,
    klom_row_label,
    klom_rows,
    latex,
    latex_head,
    markdown_head,
    markdown_row,
    number,
)
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.selection import STATISTICS
from klomflow.reporting.summary import DIAGNOSTIC_NOTE, unchanged_weights_notes
from klomflow.reporting.tables import CLASS_ACCURACY_COLUMNS

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


def klom_markdown(frame: pd.DataFrame, klom_table: pd.DataFrame, specs: dict | None = None
                  ) -> str:
    """paper_klom.md: methods (selected settings) x forget sets x (forget, retain, val, avg).

    `specs`: the config's method specs, whose defaults the notes leave out."""
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
    lines += markdown_head(["method"] + [f"{forget_set} {STATISTIC_LABELS[name]}"
                                          for forget_set in forget_sets for name in STATISTICS])
    rows = klom_rows(
        frame, forget_sets,
        label=klom_row_label, cell_text=interval_text, missing="–")
    lines += [markdown_row(row) for _, row in rows]
    lines += ["", "## Selected settings", "",
              "| forget set | method | config_id | selected by | holdout_average_95 "
              "(selection) | average_95 (reported) | settings | n_unlearned | params |",
              "|---|---|---|---|---:|---:|---:|---:|---|"]
    settings = frame.drop_duplicates(["forget_set", "method"])
    for r in settings.sort_values(["forget_set", "method"]).itertuples():
        average = cells[(r.forget_set, r.method, "average_95")].estimate
        lines.append(f"| {r.forget_set} | {r.method} | {r.config_id} | {r.selected_by} | "
                     f"{number(r.holdout_average_95)} | {number(average)} | {r.n_settings} | "
                     f"{r.n_unlearned} | `{r.params}` |")
    lines.append("")
    notes = unchanged_weights_notes(klom_table, selected_only=True, specs=specs)
    lines += [f"- **Unchanged:** {note}" for note in notes] + ([""] if notes else [])
    return "\n".join(lines)


def klom_latex(frame: pd.DataFrame, klom_table: pd.DataFrame, specs: dict | None = None) -> str:
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
    lines += latex_head("method", [latex(f) for f in forget_sets],
                         [latex(STATISTIC_LABELS[name]) for name in STATISTICS])
    rows = klom_rows(
        frame, forget_sets,
        label=lambda method, is_diagnostic: (("noise floor" if method == NOISE_FLOOR
                                              else latex(method))
                                             + ("$^\\dagger$" if is_diagnostic else "")),
        cell_text=lambda cell: (f"{number(cell.estimate)} {{\\scriptsize "
                                f"[{number(cell.low)}, {number(cell.high)}]}}"),
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
    lines += [f"% Unchanged: {latex(note)}"
              for note in unchanged_weights_notes(klom_table, selected_only=True, specs=specs)]
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
    lines += markdown_head(header)
    rows = _accuracy_rows(
        frame, klom_table,
        label=lambda method, is_diagnostic: (("oracle (retrained)" if method == "oracle"
                                              else method) + (" †" if is_diagnostic else "")),
        percent=lambda text: text, missing="–", count=True)
    lines += [markdown_row(row) for _, row in rows]
    lines.append("")
    return "\n".join(lines)


def accuracy_latex(frame: pd.DataFrame, klom_table: pd.DataFrame) -> str:
    """paper_accuracy.tex: the same table as a LaTeX tabular (booktabs), without the counts."""
    lines = ["% Accuracy on whole-class forget sets (%, mean $\\pm$ std over seeds).",
             "% Needs \\usepackage{booktabs}."]
    if len(frame) == 0:
        return "\n".join(lines + ["% No forget set of kind `class` in this configuration.", ""])
    lines += latex_head("model", [f"{latex(forget_set)} (class {label})"
                                   for forget_set, label in _class_labels(frame).items()],
                         [latex(CLASS_ACCURACY_LABELS[c]) for c in CLASS_ACCURACY_COLUMNS])
    rows = _accuracy_rows(
        frame, klom_table,
        label=lambda method, is_diagnostic: (("oracle (retrained)" if method == "oracle"
                                              else latex(method))
                                             + ("$^\\dagger$" if is_diagnostic else "")),
        percent=lambda text: text.replace("±", "$\\pm$"), missing="--", count=False)
    for method, row in rows:
        lines.append(" & ".join(row) + " \\\\")
        if method == "oracle":
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)
