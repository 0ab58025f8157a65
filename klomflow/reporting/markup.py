"""Pieces every rendered table shares: labels, Markdown and LaTeX rows and heads, numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.selection import STATISTICS

NOISE_FLOOR_LABEL = f"noise floor ({NOISE_FLOOR})"
STATISTIC_LABELS = {"forget_p95": "forget", "retain_p95": "retain", "val_p95": "validation",
                    "average_95": "average_95"}
CLASS_ACCURACY_LABELS = {
    "forget_class_train_accuracy": "forget class (train)",
    "other_classes_train_accuracy": "other classes (train)",
    "forget_class_val_accuracy": "forget class (val)",
    "other_classes_val_accuracy": "other classes (val)",
}


# --- shared pieces ----------------------------------------------------------------------------


def markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_head(header) -> list[str]:
    """A Markdown table's header and its rule: the first column left, the others right."""
    return [markdown_row(header), "|---|" + "---:|" * (len(header) - 1)]


def latex_head(first: str, groups, names) -> list[str]:
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


def number(value, digits=3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def klom_row_label(method: str, diagnostic) -> str:
    """A KLOM table row's name: the noise floor spelled out, diagnostics marked †."""
    return (NOISE_FLOOR_LABEL if method == NOISE_FLOOR else method) + (" †" if diagnostic else "")


def interval_text(cell) -> str:
    """`estimate [low, high]` of an interval row (klom_table_frame), as plain text."""
    return f"{number(cell.estimate)} [{number(cell.low)}, {number(cell.high)}]"


def latex(text: str) -> str:
    return (str(text).replace("\\", "\\textbackslash{}").replace("_", "\\_")
            .replace("%", "\\%").replace("&", "\\&").replace("#", "\\#"))


def _row_order(methods, diagnostic: dict) -> list:
    """Noise floor first, then competitors, then diagnostics, each alphabetically."""
    return sorted(methods, key=lambda m: (m != NOISE_FLOOR, bool(diagnostic.get(m)), m))


def klom_rows(frame: pd.DataFrame, forget_sets, label, cell_text, missing: str):
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

