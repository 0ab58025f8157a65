"""The explorer page (results/explorer.html) in headless Chromium, as a reader uses it.

Pages are built from small synthetic result folders in the workflow's layout
(tests/explorer_run.py); tests/test_workflow.py opens the page of a workflow run.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import find_chromium
from cdp import Browser
from explorer_run import write_run

from klomflow.metrics.klom import KlomOptions
from klomflow.options import ExplorerOptions
from klomflow.reporting.explorer_page import explorer_html

VIEWS = ("overview", "points", "worst", "classes")
# Inclusive binning at 7 bins: values where a mistake in the bin rule shows (not defaults).
OPTIONS = KlomOptions(bins=7, binning="inclusive")

# A point's position on the page (CSS pixels): its symbol in the view's SVG.
FIND_POINT = """(() => {
  const mark = Array.from(document.querySelectorAll("#chart-points svg path")).find(
    (path) => path.__data__ && path.__data__.datum && path.__data__.datum.point === %d
      && path.__data__.mark.marktype === "symbol");
  const box = mark && mark.getBoundingClientRect();
  return box && [box.left + box.width / 2, box.top + box.height / 2];
})()"""
# What the per-point view draws: its histogram bars and the picked point's lines of text.
DRAWN = """(() => {
  const bars = [], lines = [];
  const walk = (mark) => {
    for (const item of mark.items || []) {
      if (mark.marktype === "group") { (item.items || []).forEach(walk); continue; }
      const d = item.datum || {};
      if (mark.marktype === "rect" && d.side !== undefined) {
        bars.push({point: d.point, setting: d.setting, side: d.side, bin: d.bin, count: d.count});
      }
      if (mark.marktype === "text" && typeof d.text === "string") { lines.push(d.text); }
    }
  };
  walk(window.klomflow.views.points.scenegraph().root);
  return {bars: bars, lines: lines};
})()"""


def build(folder: Path, options=OPTIONS, **run) -> Path:
    results, images = write_run(folder, options=options, **run)
    page = folder / "explorer.html"
    page.write_text(explorer_html(results, options, ExplorerOptions(), images=images))
    return page


@pytest.fixture(scope="module")
def synthetic_page(tmp_path_factory):
    if find_chromium() is None:
        pytest.fail("Chromium is needed to check the explorer (apt-get install chromium)")
    return build(tmp_path_factory.mktemp("explorer"))


def opened(browser: Browser, page: Path) -> None:
    browser.open(page)
    browser.wait_for("window.klomflow && window.klomflow.ready", timeout=60)


def rendered_views(browser: Browser) -> dict:
    """Per view: whether its section shows and what it holds (table rows or drawn marks)."""
    return browser.evaluate("""(() => {
      const count = (node) => node ? 1 + (node.items || []).reduce(
        (total, item) => total + count(item), 0) : 0;
      const views = {};
      for (const name of Object.keys(PAGE.views)) {
        show(name);
        const section = document.getElementById("view-" + name);
        views[name] = {shown: section.offsetHeight > 0,
                       rows: section.querySelectorAll("tbody tr").length,
                       marks: window.klomflow.views[name] ?
                         count(window.klomflow.views[name].scenegraph().root) : 0,
                       svg: section.querySelectorAll("svg.marks").length};
      }
      return views;
    })()""")


def assert_page_is_clean(browser: Browser, page: Path) -> None:
    assert browser.console_errors == []
    assert browser.evaluate("window.klomflow.errors") == []
    # Every request: the page itself or an image inside it (data: URIs).
    assert [
        url
        for url in browser.requests
        if url != page.resolve().as_uri() and not url.startswith("data:")
    ] == []


def test_the_page_opens_from_disk_clean_and_every_view_renders(synthetic_page, tmp_path):
    shots = Path(os.environ.get("KLOMFLOW_EXPLORER_SHOTS", tmp_path))
    with Browser(tmp_path) as browser:
        opened(browser, synthetic_page)
        views = rendered_views(browser)
        for name in VIEWS:
            browser.evaluate(f"show('{name}')")
            browser.screenshot(shots / f"{name}.png")
        assert_page_is_clean(browser, synthetic_page)
    assert views["overview"]["shown"] and views["overview"]["rows"] == 3  # floor + 2 settings
    for name in VIEWS[1:]:
        assert views[name]["shown"] and views[name]["svg"] == 1, name
        assert views[name]["marks"] > 20, name
    assert all((shots / f"{name}.png").stat().st_size > 10_000 for name in VIEWS)


def reference_counts(sample, unlearned, oracle, options: KlomOptions) -> np.ndarray:
    """/work/shared/KLOM.md's bin rule, written out with numpy's own functions."""
    u = np.clip(unlearned.astype(np.float64), -options.clip, options.clip)
    o = np.clip(oracle.astype(np.float64), -options.clip, options.clip)
    low, high = min(u.min(), o.min()), max(u.max(), o.max())
    if high <= low:
        high = low + 1
    edges = np.linspace(low, high, options.bins + 1)
    sample = np.clip(sample.astype(np.float64), -options.clip, options.clip)
    if options.binning == "inclusive":
        return np.histogram(sample, bins=edges)[0]
    index = np.digitize(sample, edges)
    return np.array([(index == i).sum() for i in range(1, options.bins + 1)])


def test_clicking_a_point_shows_the_histograms_klom_compared(synthetic_page, tmp_path):
    results = synthetic_page.parent / "results"
    per_point = pd.read_parquet(results / "klom/random_20/do_nothing/0000000000.parquet")
    # The view opens on the first setting after the noise floor, the forget split and its
    # highest KLOM; the reader switches to the retain split and clicks the point with the
    # largest shift there (away from the others).
    forget = per_point[per_point["split"] == "forget"]
    opening = int(forget.loc[forget["klom"].idxmax(), "point"])
    retain = per_point[per_point["split"] == "retain"]
    target = int(retain.nlargest(1, "shift_over_std")["point"].iloc[0])
    with Browser(tmp_path) as browser:
        opened(browser, synthetic_page)
        browser.evaluate("show('points')")
        before = browser.evaluate(DRAWN)
        assert {bar["point"] for bar in before["bars"]} == {opening}
        browser.evaluate("""(() => {
          const menu = Array.from(document.querySelectorAll("#chart-points select")).find(
            (select) => Array.from(select.options).some((option) => option.value === "retain"));
          menu.value = "retain";
          menu.dispatchEvent(new Event("change"));
        })()""")
        browser.wait_for(f"{FIND_POINT % target} !== undefined", timeout=10)
        x, y = browser.evaluate(FIND_POINT % target)
        browser.click(x, y)
        browser.wait_for(f"{DRAWN}.bars.every((bar) => bar.point === {target})", timeout=10)
        drawn = browser.evaluate(DRAWN)
        assert_page_is_clean(browser, synthetic_page)
    assert {bar["setting"] for bar in drawn["bars"]} == {1}
    unlearned = np.load(results / "margins/unlearned/random_20/do_nothing/0000000000.npy")
    oracle = np.load(results / "margins/oracle/random_20.npy")
    original = np.load(results / "margins/original.npy")
    counted = []
    for side, sample in (("unlearned", unlearned), ("oracle", oracle), ("original", original)):
        bars = sorted((bar["bin"], bar["count"]) for bar in drawn["bars"] if bar["side"] == side)
        expected = reference_counts(
            sample[:, target], unlearned[:, target], oracle[:, target], OPTIONS
        )
        counted.append(f"{expected.sum()} of {len(sample)} {side}")
        assert [count for _, count in bars] == expected.tolist(), side
        assert [b for b, _ in bars] == list(range(1, OPTIONS.bins + 1))
    klom = float(per_point.loc[per_point["point"] == target, "klom"].iloc[0])
    assert f"KLOM: {np.float32(klom):.4f}" in drawn["lines"]
    assert "counted: " + ", ".join(counted) in drawn["lines"]  # the page holds float32
    assert any(line.startswith(f"point {target} (") for line in drawn["lines"])


def test_the_overview_shows_klom_parquets_numbers(synthetic_page, tmp_path):
    table = pd.read_parquet(synthetic_page.parent / "results/tables/klom.parquet")
    with Browser(tmp_path) as browser:
        opened(browser, synthetic_page)
        cells = browser.evaluate("""Array.from(document.querySelectorAll(
          "#overview tbody tr")).map((row) => Object.fromEntries(Array.from(row.cells).map(
          (cell) => [cell.dataset.column, cell.dataset.value])))""")
    assert len(cells) == table[["method", "config_id"]].drop_duplicates().shape[0]
    for row in cells:
        method, config_id = row["setting"].split(" ")[0], row["setting"].split("[")[-1][:-1]
        mine = table[
            (table["method"] == method)
            & ((table["config_id"] == config_id) | (method == "oracle_holdout"))
        ]
        for split, part in mine.groupby("split"):
            assert float(row[f"{split}_p95"]) == part["klom_p95"].iloc[0]
            assert float(row[f"{split}_mean"]) == part["klom_mean"].iloc[0]
        assert float(row["average_95"]) == mine["average_95"].iloc[0]


def test_a_published_source_and_a_worst_case_set_are_named(tmp_path):
    plain = build(tmp_path / "plain")
    published = build(tmp_path / "published", source="easydub")
    proxy = build(tmp_path / "proxy", proxy="do_nothing_forget_klom")
    text = {}
    with Browser(tmp_path) as browser:
        for name, page in (("plain", plain), ("published", published), ("proxy", proxy)):
            opened(browser, page)
            text[name] = browser.evaluate("document.body.innerText")
    assert "published source" not in text["plain"] and "proxy" not in text["plain"].lower()
    assert "Models from a published source" in text["published"]
    assert "1 published files" in text["published"]
    assert "Worst-case proxy (do_nothing_forget_klom)" in text["proxy"]


def test_above_the_settings_bound_the_page_keeps_each_methods_selected_setting(tmp_path):
    """A grid's every value would multiply the page: above `all_settings_up_to` settings a
    forget set shows the noise floor and each method's selected setting, and says so; at
    or below it, every setting. The page's data stays consistent (KLOM columns and
    histograms per shown setting, numbered from 0)."""
    from klomflow.io import read_parquet_metadata, save_parquet
    from klomflow.reporting.explorer_data import forget_set_data

    methods = ("do_nothing", "gradient_ascent", "scrub")
    results, _ = write_run(tmp_path, methods=methods)
    table_path = results / "tables" / "klom.parquet"
    table = pd.read_parquet(table_path)
    # gradient_ascent's setting is scored but not selected (another value of its grid was).
    table.loc[table["method"] == "gradient_ascent", "selected"] = False
    save_parquet(table_path, table, read_parquet_metadata(table_path))
    points = pd.read_parquet(results / "data" / "points.parquet")
    forget_set = table["forget_set"].iloc[0]

    def shown(bound):
        data = forget_set_data(results, table, points, forget_set, KlomOptions(),
                               ExplorerOptions(all_settings_up_to=bound))
        return data, list(data.settings["method"])

    for bound in (3, 30):  # three settings beside the floor: all of them
        data, names = shown(bound)
        assert names == ["oracle_holdout", "do_nothing", "gradient_ascent", "scrub"]
        assert not data.sampling_note.startswith("Settings:")
    data, names = shown(2)
    assert names == ["oracle_holdout", "do_nothing", "scrub"]
    assert list(data.settings.index) == [0, 1, 2]
    assert {c for c in data.points if c[0] == "k" and c[1:].isdigit()} == {"k0", "k1", "k2"}
    assert set(data.histograms["setting"]) == {0, 1, 2}
    # scrub's per-point KLOM is scrub's file, not the dropped setting's (index 2 here).
    scrub = data.settings.iloc[2]
    per_point = pd.read_parquet(results / "klom" / forget_set / "scrub"
                                / f"{scrub['config_id']}.parquet").set_index("point")
    np.testing.assert_array_equal(data.points.set_index("point")["k2"],
                                  per_point["klom"].reindex(data.points["point"]).to_numpy())
    assert data.sampling_note.startswith(
        "Settings: the noise floor and each method's selected setting (2 of 3;")
