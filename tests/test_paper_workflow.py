"""The paper's CIFAR-10 configuration end to end, on small CIFAR-format files.

config/paper_cifar10.yaml with the dataset swapped for files the test writes
in CIFAR-10's on-disk format and every size shrunk (images, models per side,
forget set sizes, epochs, grids, resamples); then the paper tables (rebuilt
byte-identically), their provenance, and the HTML report in headless Chromium.
Every method and the ResNet-9 recipe run as configured. The three random
forget sets differ only in size, which shrinks away (10, 100 and 1000 of
50,000 points become 2, 2 and 3 of 30), so the run keeps the largest beside the
class set; planning the full-size DAG is tested separately.
"""

import base64
import copy
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from browser import find_chromium, rendered_figures
from cdp import Browser
from dataset_files import write_cifar10
from workflow import REPOSITORY, parse_job_stats, snakemake, write_config

from klomflow.config import RESERVED_METHOD_KEYS
from klomflow.io import read_parquet_metadata
from klomflow.reporting.selection import STATISTICS
from klomflow.unlearning.methods.registry import REGISTRY

pytestmark = pytest.mark.slow

PAPER_CONFIG = REPOSITORY / "config" / "paper_cifar10.yaml"
PER_BATCH, N_TEST = 6, 10  # 30 training and 10 validation images
KEPT_FORGET_SETS = ("random_1000", "class_0")
PAPER_TABLES = [f"results/tables/paper_{table}.{extension}"
                for table in ("klom", "accuracy") for extension in ("md", "tex", "parquet")]


def paper_config() -> dict:
    return yaml.safe_load(PAPER_CONFIG.read_text())


def shrink(config: dict, n_train: int) -> dict:
    """The paper config at test size: its methods and recipe, one forget set per kind."""
    config = copy.deepcopy(config)
    config["dataset"].update(data_dir="data", verify_checksums=False)
    config["train"].update(epochs=2, peak_epoch=1, batch_size=16)
    config["models"].update(n_originals=2, n_oracles=2, n_holdout_oracles=2, seeds_per_job=2,
                            resume_checkpoint_seconds=0)
    config["forget_sets"] = {name: spec for name, spec in config["forget_sets"].items()
                             if name in KEPT_FORGET_SETS}
    for spec in config["forget_sets"].values():
        if spec["kind"] == "random":  # 1000 of 50,000 -> 3 of 30
            spec["size"] = max(2, round(spec["size"] * n_train / 10000))
    for name, entry in config["methods"].items():
        defaults = REGISTRY[(entry or {}).get("method", name)].defaults
        for key, value in (entry or {}).items():
            # A list is a grid, unless the hyperparameter itself is a list (scrub's decay epochs).
            if (isinstance(value, list) and key not in RESERVED_METHOD_KEYS
                    and not isinstance(defaults.get(key), list)):
                # A grid: its first value (gradient ascent keeps two learning rates).
                entry[key] = value[:2] if (name, key) == ("gradient_ascent", "lr") else value[0]
        if entry and "epochs" in entry:
            entry["epochs"] = 1
        if entry and "n_oracles" in entry:  # oracle matching: as many held-out oracles as exist
            entry["n_oracles"] = min(entry["n_oracles"], config["models"]["n_holdout_oracles"])
    config["datamodels"].update(n_subset_models=8, seeds_per_job=4)
    config["paper"].update(resamples=20)
    return config


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    train_labels, _ = write_cifar10(folder / "data", per_batch=PER_BATCH, n_test=N_TEST)
    config = shrink(paper_config(), n_train=len(train_labels))
    write_config(folder, config)
    result = snakemake(folder, "--cores", "2", timeout=3600)
    assert "KLOM tables are in results/tables/" in result.stdout + result.stderr
    return folder, config


def test_the_paper_config_plans_as_documented(tmp_path):
    """The full-size DAG: no data needed (nominal CIFAR-10 sizes)."""
    shutil.copy(PAPER_CONFIG, tmp_path / "config.yaml")
    result = snakemake(tmp_path, "--dry-run", "--quiet", "rules")
    jobs = parse_job_stats(result.stdout + result.stderr)
    models = paper_config()["models"]
    n_forget_sets = len(paper_config()["forget_sets"])
    assert jobs["train_originals"] == models["n_originals"] // models["seeds_per_job"]
    assert jobs["train_oracles"] == n_forget_sets * (
        models["n_oracles"] + models["n_holdout_oracles"]) // models["seeds_per_job"]
    assert jobs["compute_klom"] == jobs["gather_unlearned_margins"]
    assert jobs["make_paper_tables"] == 1 and jobs["plot_forget_set"] == n_forget_sets


def test_paper_tables_cover_every_forget_set_and_method(paper_run):
    folder, config = paper_run
    tables = folder / "results/tables"
    klom = pd.read_parquet(tables / "klom.parquet")
    chosen = klom[klom["selected"]]
    # One selected setting per (forget set, method entry), with its three splits.
    assert (chosen.groupby(["forget_set", "method"])["config_id"].nunique() == 1).all()
    assert (chosen.groupby(["forget_set", "method"]).size() == 3).all()
    competitors = chosen[(chosen["method"] != "oracle_holdout") & ~chosen["diagnostic"]]
    assert (competitors["selected_by"] == "holdout_average_95").all()
    assert competitors["holdout_average_95"].notna().all()
    assert competitors["average_95"].notna().all()
    ascent = klom[(klom["method"] == "gradient_ascent") & (klom["forget_set"] == "random_1000")]
    assert ascent["config_id"].nunique() == 2  # the grid the selection chose from
    frame = pd.read_parquet(tables / "paper_klom.parquet")
    expected = {(f, m) for f, m in zip(klom["forget_set"], klom["method"])}
    assert set(zip(frame["forget_set"], frame["method"])) == expected
    assert (frame.groupby(["forget_set", "method"])["statistic"].apply(list)
            .apply(lambda s: s == list(STATISTICS))).all()
    assert (frame["n_resamples"] == 20).all()
    text = (tables / "paper_klom.md").read_text()
    for forget_set in config["forget_sets"]:
        assert f"{forget_set} average_95" in text
    for method in config["methods"]:
        assert f"\n| {method} " in text
    assert "\n| noise floor (oracle_holdout) |" in text
    assert "\\begin{tabular}" in (tables / "paper_klom.tex").read_text()


def test_paper_accuracy_table_for_the_class_forget_set(paper_run):
    folder, config = paper_run
    tables = folder / "results/tables"
    accuracy = pd.read_parquet(tables / "paper_accuracy.parquet")
    assert set(accuracy["forget_set"]) == {"class_0"}
    assert {"original", "oracle"} <= set(accuracy["method"])
    assert set(config["methods"]) <= set(accuracy["method"])
    means = accuracy[[c for c in accuracy.columns if c.endswith("_mean")]]
    assert means.stack().between(0, 1).all()
    # The train-split figures agree with accuracy.parquet's forget/retain accuracy.
    runs = pd.read_parquet(tables / "accuracy.parquet")
    original = runs[(runs["method"] == "original") & (runs["forget_set"] == "class_0")]
    row = accuracy[accuracy["method"] == "original"].iloc[0]
    assert row["forget_class_train_accuracy_mean"] == pytest.approx(
        original["forget_accuracy"].mean())
    assert row["other_classes_train_accuracy_mean"] == pytest.approx(
        original["retain_accuracy"].mean())
    text = (tables / "paper_accuracy.md").read_text()
    assert "| original |" in text and "| oracle (retrained) |" in text
    assert "class_0 (class 0) forget class (val)" in text


def test_parquet_files_carry_provenance(paper_run):
    folder, config = paper_run
    results = folder / "results"
    paths = [results / "tables/paper_klom.parquet", results / "tables/paper_accuracy.parquet",
             results / "tables/class_accuracy.parquet",
             results / "intervals/random_1000/do_nothing.parquet"]
    for path in paths:
        metadata = read_parquet_metadata(path)
        assert metadata["config"]["dataset"]["name"] == "cifar10"
        assert metadata["config"]["models"]["n_originals"] == 2
        assert len(metadata["config_hash"]) == 16
        assert metadata["code_version"]["klomflow"]
        for package in ("torch", "numpy", "pandas", "snakemake"):
            assert metadata["packages"][package], package
        assert metadata["device"]["job_device"] in ("cpu", "cuda")
        assert len(metadata["seeds"]["original"]) == 2
        assert metadata["seeds"]["resample_seed"] == config["paper"]["resample_seed"]


def test_rebuilding_the_tables_gives_identical_files(paper_run):
    folder, _ = paper_run
    results = folder / "results"
    rebuilt = [*PAPER_TABLES, "results/tables/class_accuracy.parquet",
               *(str(p.relative_to(folder)) for p in sorted(results.glob("intervals/*/*.parquet")))]
    before = {path: (folder / path).read_bytes() for path in rebuilt}
    times = {path: (folder / path).stat().st_mtime_ns for path in rebuilt}
    result = snakemake(folder, "--cores", "2", "--forcerun", "resample_klom",
                       "resample_noise_floor", "tabulate_class_accuracy", "make_paper_tables",
                       "--", "paper_tables")
    jobs = parse_job_stats(result.stdout + result.stderr)
    assert jobs["make_paper_tables"] == 1 and jobs["resample_klom"] > 0
    for path in rebuilt:
        assert (folder / path).stat().st_mtime_ns != times[path], f"{path} was not rebuilt"
        assert (folder / path).read_bytes() == before[path], f"{path} changed on rebuild"


def test_published_forget_set_files_run_through_the_workflow(paper_run, tmp_path):
    """A forget set of kind `indices` from a file in the published format."""
    folder, config = paper_run
    config = copy.deepcopy(config)
    published = np.array([23, 3, 17, 11], dtype=np.int64)  # unsorted, as files may be
    index_folder = folder / "forget_set_indices" / "CIFAR10"
    index_folder.mkdir(parents=True, exist_ok=True)
    np.save(index_folder / "forget_set_1.npy", published)
    config["forget_sets"]["published_1"] = {
        "kind": "indices", "path": "forget_set_indices/CIFAR10/forget_set_1.npy"}
    write_config(folder, config, "published.yaml")
    snakemake(folder, "--cores", "1", "results/forget_sets/published_1.npy",
              "results/klom/published_1/do_nothing/" + _config_id(folder, "do_nothing")
              + ".parquet", config_name="published.yaml")
    np.testing.assert_array_equal(np.load(folder / "results/forget_sets/published_1.npy"),
                                  np.sort(published))
    per_point = pd.read_parquet(folder / "results/klom/published_1/do_nothing/"
                                f"{_config_id(folder, 'do_nothing')}.parquet")
    assert sorted(per_point.loc[per_point["split"] == "forget", "point"]) == sorted(published)


def _config_id(folder, method):
    klom = pd.read_parquet(folder / "results/tables/klom.parquet")
    return klom.loc[klom["method"] == method, "config_id"].iloc[0]


@pytest.fixture(scope="module")
def report(paper_run):
    """The run's report, made as the README says (`snakemake --report`), here through
    --directory from the repository's folder."""
    folder, _ = paper_run
    if find_chromium() is None:
        pytest.fail("Chromium is needed to check the report (apt-get install chromium)")
    report = folder / "results/report.html"
    snakemake(folder, "--report", str(report))
    return report


def test_report_shows_every_figure_in_a_browser(paper_run, report, tmp_path):
    folder, config = paper_run
    shown = rendered_figures(report, tmp_path)
    # The table the report opens on is listed too (under Results, an HTML page, no image).
    tables = [entry for entry in shown if entry["category"] == "Results"]
    assert [entry["subcategory"] for entry in tables] == ["KLOM table"]
    shown = [entry for entry in shown if entry["category"] != "Results"]
    files = {}
    for forget_set in config["forget_sets"]:
        for path in sorted((folder / "results/report" / forget_set).glob("*.png")):
            files[(forget_set, path.read_bytes())] = path.stem
    assert len(files) == 5 * len(config["forget_sets"])
    found = set()
    for figure in shown:
        assert figure["width"] > 0, figure["row"]  # the browser decoded the image
        data = base64.b64decode(figure["image"].split(",", 1)[1])
        key = (figure["category"], data)
        assert key in files, f"{figure['category']}/{figure['subcategory']} is not its file"
        found.add((figure["category"], files[key]))
        # The caption is rendered with the forget set filled in.
        assert all(figure["category"] in caption for caption in figure["captions"])
    assert found == {(forget_set, name) for (forget_set, _), name in files.items()}
    # Every figure of every forget set, once: p95 per split, per-point distribution,
    # margin histograms, KLOM against cost, accuracy against KLOM.
    assert {name for _, name in found} == {"klom_p95", "klom_distribution", "margin_histograms",
                                           "klom_vs_cost", "accuracy_vs_klom"}


def test_report_opens_on_the_results(paper_run, report, tmp_path):
    """The report opens on the description with the KLOM table, whose cells equal
    paper_klom.parquet; the explorer is linked beside it; each figure is one real click
    away; the metadata under it counts what the config asked for."""
    folder, config = paper_run
    paper = pd.read_parquet(folder / "results/tables/paper_klom.parquet")
    with Browser(tmp_path, height=700) as browser:
        browser.open(report)
        browser.wait_for("typeof app !== 'undefined' && document.querySelector("
                         "'#app table[data-forget-set]') !== null", timeout=120)
        assert browser.evaluate("app.state.content") == "metadata"  # not the job graph
        # Taller than the window, the page starts at its top: Snakemake centres it, which
        # would put the top out of the scrollbar's reach (report/workflow.rst's style).
        assert browser.evaluate("document.querySelector('#app .klomflow-landing')"
                                ".closest('ul').getBoundingClientRect().height"
                                " > window.innerHeight")
        assert browser.evaluate("document.querySelector('#app .klomflow-landing')"
                                ".getBoundingClientRect().top") >= 0
        tables = browser.evaluate("""Object.fromEntries(Array.from(
            document.querySelectorAll('#app table[data-forget-set]')).map(table => [
              table.dataset.forgetSet,
              Array.from(table.querySelectorAll('tr[data-method]')).map(row =>
                [row.dataset.method, ...Array.from(row.cells).slice(1).map(c => c.textContent)])
            ]))""")
        assert sorted(tables) == sorted(config["forget_sets"])
        for forget_set, rows in tables.items():
            expected = paper[paper["forget_set"] == forget_set]
            assert sorted(row[0] for row in rows) == sorted(expected["method"].unique())
            for method, *cells in rows:
                for statistic, text in zip(STATISTICS, cells, strict=True):
                    cell = expected[(expected["method"] == method)
                                    & (expected["statistic"] == statistic)].iloc[0]
                    numbers = [float(part) for part in
                               text.replace("[", "").replace("]", "").replace(",", "").split()]
                    np.testing.assert_allclose(numbers, [cell.estimate, cell.low, cell.high],
                                               atol=5e-4)
        assert browser.evaluate("document.querySelector('#app a[href=\"explorer.html\"]') "
                                "!== null")
        assert (report.parent / "explorer.html").is_file()
        # Metadata: the run's counts, from the config (an independent route to klom.parquet).
        shown = browser.evaluate("document.querySelector('#app').innerText").lower()
        models = config["models"]
        for name, count in [("forget sets", len(config["forget_sets"])),
                            ("oracles per forget set (scored)", models["n_oracles"]),
                            ("unlearned models per setting (at most)", models["n_originals"])]:
            assert re.search(rf"{re.escape(name)}\s+{count}\b", shown), name
        # One click from the landing page to each figure, with a real mouse.
        links = browser.evaluate("""Array.from(document.querySelectorAll(
            '#app a[href^="javascript:app.setView"]')).map(a => a.getAttribute('href'))""")
        figures = sorted((folder / "results/report").glob("*/*.png"))
        assert len(links) == len(figures)
        for path in figures:
            browser.open(report)
            browser.wait_for("typeof app !== 'undefined' && document.querySelector("
                             "'#app table[data-forget-set]') !== null", timeout=120)
            where = browser.evaluate(f"""(() => {{
                const link = Array.from(document.querySelectorAll(
                    '#app a[href^="javascript:app.setView"]')).find(a =>
                    a.getAttribute('href').includes("'{path.relative_to(folder)}'"));
                link.scrollIntoView();
                const box = link.getClientRects()[0];  // a link may wrap: its first line
                return [box.x + box.width / 2, box.y + box.height / 2];
            }})()""")
            browser.click(*where)
            browser.wait_for("app.state.content === 'img'", timeout=20)
            image = browser.evaluate(
                "document.querySelector('#app img[src^=\"data:image/png\"]').src")
            assert base64.b64decode(image.split(",", 1)[1]) == path.read_bytes(), path
        assert browser.console_errors == []
