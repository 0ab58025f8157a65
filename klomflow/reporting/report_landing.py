"""What the Snakemake report opens on: the paper KLOM table as HTML, and the run's counts.

Snakemake's HTML report opens on the job graph unless it is given metadata
(`--report-metadata`); with metadata it opens on the workflow's description followed by the
metadata entries. The workflow profile (profiles/default/config.yaml) therefore names
REPORT_METADATA, a yte template whose entries are counts from run_counts(), and the
description (report/workflow.rst) includes results_html()'s table, written by the rule
summarise_for_report to results/report/results.html.

Why counts only: Snakemake 9 passes every string metadata value through docutils'
publish_parts with its default (pseudo-XML) writer, which returns a dict of the parts; the
page then shows that dict's keys (encoding, errors, version, whole) instead of the text.
Numbers are passed through as they are.
"""

from __future__ import annotations

# Only the standard library at import: the workflow profile imports this module for
# REPORT_METADATA at every Snakemake start; the functions import what they use.
import html
from pathlib import Path

REPORT_METADATA = Path(__file__).with_name("report_metadata.yaml")


def run_counts(klom_table_path="results/tables/klom.parquet") -> dict[str, int]:
    """The report's metadata entries: the run's forget sets, method settings and models.

    Read from klom.parquet (relative to the folder Snakemake runs in); empty when the run
    has not written it, and the report then opens on the job graph, as Snakemake's does.
    """
    import pandas as pd

    from klomflow.reporting.names import NOISE_FLOOR

    path = Path(klom_table_path)
    if not path.is_file():
        return {}
    table = pd.read_parquet(path, columns=["forget_set", "method", "config_id", "split",
                                           "n_unlearned", "n_oracle"])
    settings = table[table["method"] != NOISE_FLOOR]
    return {
        "Forget sets": int(table["forget_set"].nunique()),
        "Method settings scored (per forget set, at most)": int(
            settings.drop_duplicates(["forget_set", "method", "config_id"])
            .groupby("forget_set").size().max()) if len(settings) else 0,
        "Oracles per forget set (scored)": int(table["n_oracle"].max()),
        "Unlearned models per setting (at most)": int(settings["n_unlearned"].max())
        if len(settings) else 0,
    }


def results_html(frame, klom_table) -> str:
    """An HTML fragment: per forget set, each method's selected setting's KLOM p95 per split
    and average_95, estimate [95% interval], noise floor first (the paper table's rows).

    frame: klomflow.reporting.selection.klom_table_frame (paper_klom.parquet);
    klom_table: klom.parquet, for the KLOM options named above the tables.
    """
    from klomflow.reporting.markup import (
        STATISTIC_LABELS,
        interval_text,
        klom_row_label,
        klom_rows,
    )
    from klomflow.reporting.render import proxy_note
    from klomflow.reporting.selection import STATISTICS

    first = klom_table.iloc[0]
    # Inline styles: the report's own CSS leaves tables bare. No wrapping: the description
    # sits in a narrow column, and a wrapped interval reads as two numbers.
    cell = "padding:2px 8px;white-space:nowrap"
    style = ("border-collapse:collapse;font-size:0.85rem;margin:0.5rem 0 1.25rem 0",
             f"{cell};border-bottom:1px solid #999;text-align:right",
             f"{cell};text-align:right;font-variant-numeric:tabular-nums")
    parts = [
        '<div class="klomflow-results">',
        "<p>KLOM p95 of each method's selected setting per split (lower is better): "
        "estimate [95% interval]. Dataset "
        f"{html.escape(str(first['dataset']))}, model "
        f"{html.escape(str(first['model']))}, {int(first['klom_bins'])} bins. "
        "The setting is chosen on the held-out oracles and reported against the scored "
        "oracles; the noise floor is the best any method can reach with this many models; "
        "† marks diagnostics that use oracles (upper bounds, not competitors). "
        "Every setting: results/tables/klom.parquet; the same table in "
        "results/tables/paper_klom.md.</p>",
    ]
    note = proxy_note(klom_table)
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for forget_set in sorted(frame["forget_set"].unique()):
        rows = klom_rows(frame[frame["forget_set"] == forget_set], [forget_set],
                         label=klom_row_label, cell_text=interval_text, missing="–")
        head = "".join(f'<th style="{style[1]}">{html.escape(STATISTIC_LABELS[name])}</th>'
                       for name in STATISTICS)
        parts += [f'<h3 style="margin-top:1rem;font-weight:600">{html.escape(forget_set)}</h3>',
                  f'<table style="{style[0]}" data-forget-set="{html.escape(forget_set)}">',
                  f'<thead><tr><th style="{style[1]};text-align:left">method</th>{head}'
                  "</tr></thead><tbody>"]
        for method, row in rows:
            cells = "".join(f'<td style="{style[2]}">{html.escape(text)}</td>'
                            for text in row[1:])
            parts.append(f'<tr data-method="{html.escape(method)}">'
                         f'<td style="{cell}">{html.escape(row[0])}</td>{cells}</tr>')
        parts.append("</tbody></table>")
    parts.append("</div>")
    return "\n".join(parts) + "\n"
