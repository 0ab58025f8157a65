"""What the Snakemake report opens on: the KLOM table (results/report/results.html), the
metadata whose presence makes the report open on it, and the profile that names it.

The browser check of the report itself is in tests/test_paper_workflow.py.
"""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from snakemake.profiles import ProfileConfigFileParser
from snakemake.report import _validate_flat_dict
from yte import process_yaml

from klomflow.reporting.report_landing import REPORT_METADATA, results_html, run_counts

ROOT = Path(__file__).resolve().parents[1]
STATISTICS = ["forget_p95", "retain_p95", "val_p95", "average_95"]


class Tables(HTMLParser):
    """{forget set: [[cell text, ...] per body row]} of every table in an HTML fragment."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs["data-forget-set"], [])
        elif tag == "tr" and "data-method" in attrs:
            self.row = [attrs["data-method"]]
            self.current.append(self.row)
        elif tag == "td" and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def paper_frame(rng):
    """A long-form paper table with the columns klom_table_frame writes: two forget sets,
    one method missing on one of them, a diagnostic, a NaN interval end."""
    rows = []
    methods = {"oracle_holdout": False, "do_nothing": False, "oracle_matching": True,
               "gradient_ascent": False}
    for forget_set in ["random_60", "class_3"]:
        for method, diagnostic in methods.items():
            if forget_set == "class_3" and method == "gradient_ascent":
                continue
            for statistic in STATISTICS:
                low, estimate, high = np.sort(rng.uniform(0, 11, 3))
                rows.append({"forget_set": forget_set, "method": method,
                             "statistic": statistic, "estimate": estimate, "low": low,
                             "high": high, "diagnostic": diagnostic})
    rows[5]["high"] = np.nan
    return pd.DataFrame(rows)


def klom_table():
    return pd.DataFrame({"dataset": ["digits"], "model": ["mlp"], "klom_bins": [20],
                         "forget_set": ["random_60"], "forget_set_proxy": [None]})


def test_results_table_holds_each_cell_of_the_paper_table():
    frame = paper_frame(np.random.default_rng(3))
    parser = Tables()
    parser.feed(results_html(frame, klom_table()))
    assert sorted(parser.tables) == ["class_3", "random_60"]
    for forget_set, rows in parser.tables.items():
        expected = frame[frame["forget_set"] == forget_set]
        # The noise floor first, competitors, then diagnostics; the floor's label and † said.
        methods = [row[0] for row in rows]
        competitors = sorted(m for m in ("do_nothing", "gradient_ascent")
                             if m in set(expected["method"]))
        assert methods == ["oracle_holdout", *competitors, "oracle_matching"]
        assert rows[0][1].startswith("noise floor")
        assert rows[-1][1] == "oracle_matching †"
        for row in rows:
            for statistic, text in zip(STATISTICS, row[2:], strict=True):
                cell = expected[(expected["method"] == row[0])
                                & (expected["statistic"] == statistic)].iloc[0]
                shown = [np.nan if part == "n/a" else float(part)
                         for part in text.replace("[", "").replace("]", "").split(", ")
                         for part in part.split(" ")]
                np.testing.assert_allclose(shown, [cell.estimate, cell.low, cell.high],
                                           atol=5e-4, equal_nan=True)


def test_results_table_escapes_names():
    frame = paper_frame(np.random.default_rng(0))
    frame["method"] = frame["method"].replace("do_nothing", "a<b")
    text = results_html(frame, klom_table())
    assert "a<b" not in text and "a&lt;b" in text


def write_klom(folder: Path) -> pd.DataFrame:
    """klom.parquet's columns that run_counts reads: two forget sets, three settings on
    one, a method whose unlearned models diverged on one setting."""
    rows = []
    for forget_set, settings in {"random_60": [("do_nothing", "a", 8), ("ga", "b", 8),
                                               ("ga", "c", 6)],
                                 "class_3": [("do_nothing", "a", 8)]}.items():
        for method, config_id, n_unlearned in [("oracle_holdout", "reference", 12), *settings]:
            for split in ["forget", "retain", "val"]:
                rows.append({"forget_set": forget_set, "method": method,
                             "config_id": config_id, "split": split,
                             "n_unlearned": n_unlearned, "n_oracle": 10})
    table = pd.DataFrame(rows)
    (folder / "results/tables").mkdir(parents=True)
    table.to_parquet(folder / "results/tables/klom.parquet")
    return table


def test_run_counts_counts_forget_sets_settings_and_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_counts() == {}  # before a run: no metadata, Snakemake's own landing page
    write_klom(tmp_path)
    assert run_counts() == {
        "Forget sets": 2,
        "Method settings scored (per forget set, at most)": 3,
        "Oracles per forget set (scored)": 10,
        # The held-out oracles (12, the noise floor's "unlearned") are not a method's.
        "Unlearned models per setting (at most)": 8,
    }


def test_metadata_template_gives_numbers_snakemake_shows_as_they_are(tmp_path, monkeypatch):
    """Snakemake renders every string metadata value into a dict of docutils' parts, which
    the report then shows as unrelated keys; numbers it leaves alone. The template, read as
    Snakemake reads it (yte, in the workflow's folder), must give a flat dict of numbers."""
    monkeypatch.chdir(tmp_path)
    write_klom(tmp_path)
    with open(REPORT_METADATA) as template:
        metadata = process_yaml(template)
    assert metadata == run_counts() and len(metadata) == 4
    assert _validate_flat_dict(metadata)
    assert all(isinstance(value, int) for value in metadata.values())


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_workflow_profile_names_the_metadata_from_any_folder(where, tmp_path, monkeypatch):
    """`report-metadata` is read at the start and the file opened after Snakemake has moved
    into --directory: it must be absolute and exist wherever Snakemake was started."""
    monkeypatch.chdir(ROOT if where == "root" else tmp_path)
    with open(ROOT / "profiles/default/config.yaml") as profile:
        settings = ProfileConfigFileParser().parse(profile)
    path = Path(settings["report-metadata"])
    assert path.is_absolute() and path == REPORT_METADATA and path.is_file()
    # The profile's other settings still arrive as before.
    assert settings["rerun-triggers"] == ["mtime", "params", "input", "software-env"]
