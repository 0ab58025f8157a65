"""The workflow end to end on a tiny config, and what its files must satisfy."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from workflow import (
    REPOSITORY,
    parse_job_stats,
    planned_jobs,
    snakemake,
    tiny_config,
    write_config,
)

from klomflow.config import method_settings, training_seed, validate
from klomflow.data.datasets import load_dataset
from klomflow.io import load_torch, read_parquet_metadata
from klomflow.jobs.runs import train_shard, unlearn_shard
from klomflow.metrics.klom import SPLITS, KlomOptions, klom_per_point
from klomflow.metrics.margins import margins_from_logits
from klomflow.training.loop import Recipe, predict_logits, train_model
from klomflow.training.models import build_model

pytestmark = pytest.mark.slow

# Rules that train, unlearn or gather model outputs: never rerun for a KLOM option.
MODEL_RULES = {"prepare_data", "make_forget_set", "train_originals", "train_oracles",
               "gather_original_margins", "gather_oracle_margins", "unlearn",
               "gather_unlearned_margins", "gather_holdout_oracle_logits", "train_subset_models",
               "fit_datamodels"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_config(folder, tiny_config())
    result = snakemake(folder, "--cores", "2")
    assert "KLOM tables are in results/tables/" in result.stdout + result.stderr
    return folder


def test_points_and_forget_sets(tiny_run):
    points = pd.read_parquet(tiny_run / "results/data/points.parquet")
    assert list(points.columns[:3]) == ["point", "split", "label"]
    assert (points["point"] == np.arange(len(points))).all()
    n_train = int((points["split"] == "train").sum())
    assert (points["split"].iloc[:n_train] == "train").all()
    assert (points["split"].iloc[n_train:] == "val").all()
    forget = np.load(tiny_run / "results/forget_sets/class_5.npy")
    assert forget.dtype == np.int64 and np.all(np.diff(forget) > 0)
    assert (points["label"].to_numpy()[forget] == 5).all()
    assert (points["label"].iloc[:n_train] == 5).sum() == len(forget)


def test_margin_files_follow_the_contract(tiny_run):
    results = tiny_run / "results"
    points = pd.read_parquet(results / "data/points.parquet")
    original = np.load(results / "margins/original.npy")
    assert original.dtype == np.float32 and original.shape == (4, len(points))
    for kind in ("oracle", "oracle_holdout"):
        assert np.load(results / f"margins/{kind}/random_30.npy").shape == (4, len(points))
    # Margins are the direct formula applied to the saved logits, in seed order.
    logits = np.concatenate([np.load(results / f"logits/original/shard_{k}.npy")
                             for k in range(2)])
    np.testing.assert_allclose(original, margins_from_logits(logits, points["label"]), atol=1e-5)


def test_oracles_never_saw_their_forget_set(tiny_run):
    results = tiny_run / "results"
    points = pd.read_parquet(results / "data/points.parquet")
    n_train = int((points["split"] == "train").sum())
    for forget_set in ("random_30", "class_5"):
        forget = np.load(results / f"forget_sets/{forget_set}.npy")
        for shard in range(4):
            checkpoint = load_torch(results / f"models/oracle/{forget_set}/shard_{shard}.pt")
            assert checkpoint["forget_set"] == forget_set
            for model in checkpoint["models"]:
                assert not np.isin(forget, model["train_indices"]).any()
                assert len(model["train_indices"]) + len(forget) == n_train
    original = load_torch(results / "models/original/shard_0.pt")
    np.testing.assert_array_equal(original["models"][0]["train_indices"], np.arange(n_train))
    for model in original["models"]:
        assert {"seed", "train_indices", "state_dict"} <= set(model)
    assert original["config"]["train"]["epochs"] == 4 and original["klomflow_version"]


def test_klom_tables(tiny_run):
    results = tiny_run / "results"
    table = pd.read_parquet(results / "tables/klom.parquet")
    expected = {"dataset", "model", "forget_set", "method", "config_id", "params", "split",
                "n_points", "n_unlearned", "n_oracle", "n_diverged", "klom_mean", "klom_std",
                "klom_p50", "klom_p95", "klom_p99", "klom_bins", "klom_binning",
                "klom_direction", "klom_eps", "klom_clip"}
    assert expected <= set(table.columns)
    # 2 forget sets x (noise floor + 5 settings) + 1 setting on random_30 only, 3 splits each.
    assert len(table) == 3 * (2 * 6 + 1)
    assert set(table["split"]) == {"forget", "retain", "val"}
    assert (table.loc[table["method"] == "oracle_holdout", "config_id"] == "reference").all()
    exploding = table[table["method"] == "exploding"]
    assert (exploding["n_diverged"] == 4).all() and (exploding["n_unlearned"] == 0).all()
    kept = table[table["method"] != "exploding"]
    assert (kept["n_diverged"] == 0).all() and kept["klom_p95"].notna().all()
    assert (table["klom_bins"] == 10).all()
    params = json.loads(table.loc[table["method"] == "gradient_ascent", "params"].iloc[0])
    assert params["epochs"] == 1
    per_point = pd.read_parquet(results / "klom/random_30/do_nothing/"
                                f"{table.loc[table['method'] == 'do_nothing', 'config_id'].iloc[0]}"
                                ".parquet")
    assert list(per_point.columns) == ["point", "split", "klom", "shift_over_std"]
    # The saturation diagnostic, recomputed from the margin files.
    unlearned = np.load(results / "margins/unlearned/random_30/do_nothing/"
                        f"{do_nothing_id(table)}.npy").astype(np.float64)
    oracle = np.load(results / "margins/oracle/random_30.npy").astype(np.float64)
    shift = np.abs(unlearned.mean(0) - oracle.mean(0)) / np.sqrt(
        (unlearned.var(0, ddof=1) + oracle.var(0, ddof=1)) / 2)
    np.testing.assert_allclose(per_point["shift_over_std"], shift, rtol=1e-6)
    row = table[(table["forget_set"] == "random_30") & (table["method"] == "do_nothing")
                & (table["split"] == "val")]
    assert row["median_shift_over_std"].iloc[0] == pytest.approx(
        np.median(shift[per_point["split"] == "val"]))
    assert (per_point["split"] == "forget").sum() == 30
    assert read_parquet_metadata(results / "tables/klom.parquet")["config"]["klom"]["bins"] == 10
    summary = (results / "tables/klom_summary.md").read_text()
    assert "## random_30" in summary and "| oracle_holdout | reference |" in summary
    assert "| shift/std forget / retain / val |" in summary


def do_nothing_id(table):
    return table.loc[table["method"] == "do_nothing", "config_id"].iloc[0]


def test_accuracy_table(tiny_run):
    table = pd.read_parquet(tiny_run / "results/tables/accuracy.parquet")
    assert {"forget_set", "method", "config_id", "seed", "forget_accuracy", "retain_accuracy",
            "val_accuracy", "unlearning_seconds"} <= set(table.columns)
    oracle = table[(table["method"] == "oracle") & (table["forget_set"] == "class_5")]
    # An oracle never saw digit 5: it cannot classify its training images as 5.
    assert (oracle["forget_accuracy"] == 0).all()
    unlearned = table[table["method"] == "gradient_descent"]
    assert (unlearned["unlearning_seconds"] > 0).all() and len(unlearned) == 8
    assert (unlearned["changed_weights"] > 0).all()
    assert (table.loc[table["method"] == "do_nothing", "changed_weights"] == 0).all()


def test_unlearned_checkpoints_are_declared_outputs(tiny_run):
    """models.save_unlearned_checkpoints: each unlearn job writes its shard's weights."""
    config = validate(tiny_config())
    settings = method_settings(config)
    for setting in settings:
        for forget_set in setting.forget_sets:
            for shard in range(2):
                checkpoint = load_torch(tiny_run / f"results/models/unlearned/{forget_set}/"
                                        f"{setting.entry}/{setting.config_id}/shard_{shard}.pt")
                assert checkpoint["setting"]["implementation"] == setting.implementation
                assert checkpoint["setting"]["forget_sets"] == (forget_set,)
                assert len(checkpoint["models"]) == 2
    target = (f"results/models/unlearned/random_30/do_nothing/"
              f"{next(s for s in settings if s.entry == 'do_nothing').config_id}/shard_0.pt")
    assert snakemake(tiny_run, "--dry-run", target, check=False).returncode == 0
    # Switched off, no rule makes them, and nothing reruns.
    off = tiny_config()
    off["models"]["save_unlearned_checkpoints"] = False
    write_config(tiny_run, off, "no_checkpoints.yaml")
    assert snakemake(tiny_run, "--dry-run", target, config_name="no_checkpoints.yaml",
                     check=False).returncode != 0
    assert planned_jobs(tiny_run, "no_checkpoints.yaml") == {}


def test_accuracy_is_top1_from_the_logit_files(tiny_run):
    """Recomputed from logits/...: argmax == label, not a positive margin (p_y > 1/2)."""
    results = tiny_run / "results"
    points = pd.read_parquet(results / "data/points.parquet")
    labels = points["label"].to_numpy()
    n_train = int((points["split"] == "train").sum())
    table = pd.read_parquet(results / "tables/accuracy.parquet")
    row = table[table["method"] == "gradient_descent"].sort_values("seed").iloc[0]
    folder = results / f"logits/unlearned/{row['forget_set']}/gradient_descent/{row['config_id']}"
    runs = pd.read_parquet(results / f"runs/unlearned/{row['forget_set']}/gradient_descent/"
                           f"{row['config_id']}.parquet")
    logits = np.concatenate([np.load(folder / f"shard_{k}.npy") for k in range(2)])
    model = logits[int(np.flatnonzero(runs["seed"].to_numpy() == row["seed"])[0])]
    forget = np.load(results / f"forget_sets/{row['forget_set']}.npy")
    retain = np.setdiff1d(np.arange(n_train), forget)
    correct = model.argmax(-1) == labels
    assert row["retain_accuracy"] == pytest.approx(correct[retain].mean())
    assert row["forget_accuracy"] == pytest.approx(correct[forget].mean())
    assert row["val_accuracy"] == pytest.approx(correct[n_train:].mean())
    # The tiny models are unconfident: top-1 counts points a margin > 0 would miss.
    originals = np.concatenate([np.load(results / f"logits/original/shard_{k}.npy")
                                for k in range(2)])
    top1 = (originals.argmax(-1) == labels)[:, :n_train].mean(axis=1)
    by_margin = (margins_from_logits(originals, labels) > 0)[:, :n_train].mean(axis=1)
    assert (top1 > by_margin).all()
    original = table[(table["method"] == "original") & (table["forget_set"] == "random_30")]
    assert sorted(original["val_accuracy"]) == pytest.approx(
        sorted((originals.argmax(-1) == labels)[:, n_train:].mean(axis=1)))


def test_same_config_gives_the_same_margins(tiny_run, tmp_path):
    """Training and unlearning again in this process reproduce the workflow's files."""
    config = validate(tiny_config())
    config["models"]["resume_checkpoint_seconds"] = 0
    checkpoint, logits = train_shard(config, "original", 1, tmp_path / "resume",
                                     log=lambda message: None, device=torch.device("cpu"))
    np.testing.assert_array_equal(logits, np.load(tiny_run / "results/logits/original/shard_1.npy"))
    setting = next(s for s in method_settings(config) if s.entry == "neggrad_plus")
    forget = np.load(tiny_run / "results/forget_sets/random_30.npy")
    unlearned, _, _ = unlearn_shard(config, setting, "random_30", forget, checkpoint,
                                    log=lambda message: None, device=torch.device("cpu"))
    saved = np.load(tiny_run / f"results/logits/unlearned/random_30/neggrad_plus/"
                    f"{setting.config_id}/shard_1.npy")
    np.testing.assert_array_equal(unlearned, saved)


def test_adding_a_method_runs_only_its_jobs(tiny_run):
    config = tiny_config()
    config["methods"]["gradient_descent"]["lr"] = [0.01, 0.05]  # one new grid value
    config["methods"]["big_steps"] = {"method": "gradient_ascent", "lr": 0.1, "epochs": 1}
    write_config(tiny_run, config, "more_methods.yaml")
    jobs = planned_jobs(tiny_run, "more_methods.yaml")
    assert not set(jobs) & (MODEL_RULES - {"unlearn", "gather_unlearned_margins"})
    # 1 new gradient_descent value + 1 new entry, on 2 forget sets, 2 shards each.
    assert jobs["unlearn"] == 2 * 2 * 2
    assert jobs["compute_klom"] == 4 and "compute_noise_floor" not in jobs
    assert jobs["reduce_klom"] == 1 and jobs["tabulate_accuracy"] == 1


def test_changing_a_klom_option_reruns_only_reductions(tiny_run):
    config = tiny_config()
    config["klom"]["binning"] = "inclusive"
    write_config(tiny_run, config, "inclusive.yaml")
    jobs = planned_jobs(tiny_run, "inclusive.yaml")
    assert not set(jobs) & MODEL_RULES
    assert "tabulate_accuracy" not in jobs  # accuracy does not depend on KLOM options
    assert jobs["compute_noise_floor"] == 2 and jobs["compute_klom"] == 11


def test_nothing_to_do_after_a_complete_run(tiny_run):
    result = snakemake(tiny_run, "--dry-run", "--quiet", "rules")
    output = result.stdout + result.stderr
    # Snakemake's own verdict, not only the absence of a job table we could misparse.
    assert "Nothing to be done (all requested files are present and up to date)." in output
    assert parse_job_stats(output) == {}


def test_a_newer_workflow_script_reruns_nothing(tiny_run):
    """A checkout gives every script a new file date; only versions in params rerun jobs
    (profiles/default: no `code` trigger), or a pull would retrain every model."""
    script = REPOSITORY / "workflow_scripts" / "prepare_data.py"
    before = script.stat()
    later = before.st_mtime + 3600
    os.utime(script, (later, later))
    try:
        result = snakemake(tiny_run, "--dry-run", "--quiet", "rules")
    finally:
        os.utime(script, (before.st_atime, before.st_mtime))
    output = result.stdout + result.stderr
    assert "Nothing to be done (all requested files are present and up to date)." in output


def test_bad_config_fails_before_any_job(tmp_path):
    config = tiny_config()
    config["models"]["n_oracles"] = 1
    config["methods"]["do_nothing"] = {"lr": 0.1}
    # Given with --configfile: the message names this file, not config.yaml.
    write_config(tmp_path, config, name="other.yaml")
    result = snakemake(tmp_path, "--cores", "1", check=False, config_name="other.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{tmp_path / 'other.yaml'}: invalid config" in output
    assert "models.n_oracles" in output and "config.yaml" not in output
    assert not (tmp_path / "results").exists()


def test_bumping_a_method_version_reruns_only_that_method(tiny_run, tmp_path):
    """A code fix in one method, marked by its VERSION, reruns its jobs and the reductions."""
    import os
    import shutil
    import subprocess
    import sys

    from workflow import REPOSITORY

    copy = tmp_path / "repository"
    shutil.copytree(REPOSITORY, copy, ignore=shutil.ignore_patterns(
        "results", ".snakemake", ".git", "__pycache__", "*.egg-info", ".pytest_cache"))
    registry = copy / "klomflow/unlearning/methods/registry.py"
    text = registry.read_text()
    assert 'MethodSpec("gradient_descent",' in text
    registry.write_text(text.replace('MethodSpec("gradient_descent",',
                                     'MethodSpec("gradient_descent", version="2",'))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "--directory",
         str(tiny_run), "--configfile", str(tiny_run / "config.yaml"), "--dry-run", "--quiet",
         "rules"],
        capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(copy)},
        # `python -m` puts the working directory first on sys.path: stay out of the repository.
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # gradient_descent: 2 forget sets x 2 shards; nothing else is retrained or unlearned.
    jobs = parse_job_stats(output)
    assert jobs["unlearn"] == 4 and jobs["compute_klom"] == 2
    assert not set(jobs) & (MODEL_RULES - {"unlearn", "gather_unlearned_margins"})


def test_klom_files_and_tables_recomputed_from_the_margin_files(tiny_run):
    """Every per-point KLOM file and klom.parquet row, from the margins on disk.

    unlearned (finite runs) against the scored oracles, in the configured direction;
    the reference row: held-out oracles against the scored oracles; holdout_*:
    against the held-out oracles. Swapping the direction or the oracles changes them.
    """
    results = tiny_run / "results"
    options = KlomOptions(**validate(tiny_config())["klom"])
    points = pd.read_parquet(results / "data/points.parquet")
    n_train = int((points["split"] == "train").sum())
    table = pd.read_parquet(results / "tables/klom.parquet").set_index(
        ["forget_set", "method", "config_id", "split"]).sort_index()
    settings = table.index.droplevel("split").unique()
    assert len(settings) == 13
    for forget_set, method, config_id in settings:
        forget = np.load(results / f"forget_sets/{forget_set}.npy")
        splits = np.where(np.arange(len(points)) < n_train, "retain", "val").astype(object)
        splits[forget] = "forget"
        scored = np.load(results / f"margins/oracle/{forget_set}.npy")
        holdout = np.load(results / f"margins/oracle_holdout/{forget_set}.npy")
        reference = method == "oracle_holdout"
        unlearned = holdout if reference else np.load(
            results / f"margins/unlearned/{forget_set}/{method}/{config_id}.npy")
        finite = np.isfinite(unlearned).all(axis=1)
        per_point = pd.read_parquet(results / f"klom/{forget_set}/{method}/{config_id}.parquet")
        assert per_point["split"].tolist() == splits.tolist()
        if not finite.any():  # every run diverged: no KLOM
            assert per_point["klom"].isna().all()
            assert table.loc[(forget_set, method, config_id), "klom_p95"].isna().all()
            continue
        expected = klom_per_point(unlearned[finite], scored, options)
        np.testing.assert_array_equal(per_point["klom"].to_numpy(), expected)
        against_holdout = None if reference else klom_per_point(unlearned[finite], holdout,
                                                                options)
        for split in SPLITS:
            row = table.loc[(forget_set, method, config_id, split)]
            chosen = splits == split
            assert row["n_points"] == chosen.sum() and row["n_unlearned"] == finite.sum()
            assert row["klom_p95"] == pytest.approx(np.percentile(expected[chosen], 95),
                                                    rel=1e-12)
            if against_holdout is not None:
                assert row["holdout_klom_p95"] == pytest.approx(
                    np.percentile(against_holdout[chosen], 95), rel=1e-12)


def test_oracle_matching_sees_only_the_held_out_oracles(tiny_run):
    """logits/oracle_holdout/{fs}.npy (oracle_matching's input) holds the oracles from
    n_oracles on, never a scored one."""
    config = validate(tiny_config())
    n_scored, n_holdout = config["models"]["n_oracles"], config["models"]["n_holdout_oracles"]
    forget_sets = list(config["forget_sets"])
    # The tiny config has no method that needs them: ask for them.
    snakemake(tiny_run, "--cores", "1",
              *(f"results/logits/oracle_holdout/{name}.npy" for name in forget_sets))
    results = tiny_run / "results"
    for forget_set in forget_sets:
        indices, logits = [], []
        for shard in range(4):  # 8 oracles, 2 per job: the boundary falls between jobs
            checkpoint = load_torch(results / f"models/oracle/{forget_set}/shard_{shard}.pt")
            indices += [model["index"] for model in checkpoint["models"]]
            logits.append(np.load(results / f"logits/oracle/{forget_set}/shard_{shard}.npy"))
        logits = np.concatenate(logits)
        assert indices == list(range(n_scored + n_holdout))
        holdout = np.load(results / f"logits/oracle_holdout/{forget_set}.npy")
        np.testing.assert_array_equal(holdout, logits[n_scored:])
        for row in holdout:
            assert not any(np.array_equal(row, scored) for scored in logits[:n_scored])


def test_an_oracle_retrained_without_its_forget_set_gives_the_workflows_logits(tiny_run):
    """By behaviour, not by the checkpoint's record of its indices: train one random_30
    oracle here on the complement of the forget set and compare its logits bit for bit."""
    results = tiny_run / "results"
    config = validate(tiny_config())
    dataset = load_dataset(config["dataset"])
    forget = np.load(results / "forget_sets/random_30.npy")
    spec = config["forget_sets"]["random_30"]
    np.testing.assert_array_equal(forget, np.sort(np.random.default_rng(spec["seed"]).choice(
        dataset.n_train, size=spec["size"], replace=False)))
    keep = torch.as_tensor(np.setdiff1d(np.arange(dataset.n_train), forget))
    record = load_torch(results / "models/oracle/random_30/shard_1.pt")["models"][1]
    index, seed = record["index"], record["seed"]
    assert index == 3 and seed == training_seed(config, "oracle", "random_30", index)
    model = build_model(config["model"], dataset.input_shape, dataset.n_classes, seed)
    # runs._train_one: initialised from the seed, shuffled by a generator seeded seed + 1.
    train_model(model, dataset.train_x[keep], dataset.train_y[keep],
                Recipe.from_config(config["train"]), torch.Generator().manual_seed(seed + 1),
                torch.device("cpu"), log=lambda message: None)
    logits = predict_logits(model, dataset.eval_x, torch.device("cpu"))
    saved = np.load(results / "logits/oracle/random_30/shard_1.npy")[1]
    np.testing.assert_array_equal(logits, saved)


def test_rebuilding_the_klom_and_accuracy_tables_gives_identical_files(tiny_run, tmp_path):
    """As for the paper tables: rerun the reductions on the same margins, same bytes.

    In a copy of the run (modification times kept), so that the rebuilt tables do not
    make the other tests' run out of date.
    """
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder, symlinks=True)
    tables = ["results/tables/klom.parquet", "results/tables/accuracy.parquet",
              "results/tables/klom_summary.md"]
    before = {path: (folder / path).read_bytes() for path in tables}
    times = {path: (folder / path).stat().st_mtime_ns for path in tables}
    result = snakemake(folder, "--cores", "1", "--forcerun", "reduce_klom", "tabulate_accuracy",
                       "--", *tables)
    assert parse_job_stats(result.stdout + result.stderr) == {"reduce_klom": 1,
                                                              "tabulate_accuracy": 1}
    for path in tables:
        assert (folder / path).stat().st_mtime_ns != times[path], f"{path} was not rebuilt"
        assert (folder / path).read_bytes() == before[path], f"{path} changed on rebuild"


def test_the_job_server_served_every_job_and_changed_no_number(tiny_run, tmp_path):
    """Local runs fork jobs from a warm server (klomflow/job_server.py); with it off, each
    job imports torch itself. Same margins and logits, bit for bit, either way."""
    log = (tiny_run / "results/logs/job_server.log").read_text()
    assert "; 0 ran cold" in log and "runs cold" not in log, log
    served = int(log.split("stopped: served ")[1].split(" jobs")[0])
    assert served >= 40, log  # every script job of the tiny run
    write_config(tmp_path, tiny_config())
    targets = sorted(str(path.relative_to(tiny_run)) for path in [
        *(tiny_run / "results/margins/unlearned/random_30").glob("gradient_ascent/*.npy"),
        tiny_run / "results/margins/oracle/random_30.npy"])
    assert len(targets) == 3, targets
    snakemake(tmp_path, "--cores", "2", *targets,
              environment=dict(os.environ) | {"KLOMFLOW_JOB_SERVER": "off"})
    assert not (tmp_path / "results/logs/job_server.log").exists()
    for target in targets:
        np.testing.assert_array_equal(np.load(tmp_path / target), np.load(tiny_run / target))
    for logits in (tmp_path / "results/logits").rglob("*.npy"):
        np.testing.assert_array_equal(np.load(logits),
                                      np.load(tiny_run / logits.relative_to(tmp_path)))


def test_the_run_writes_an_explorer_page_that_opens_clean(tiny_run, tmp_path):
    """The workflow's own page: every view renders, no console error, no request."""
    from cdp import Browser
    from test_explorer import VIEWS, assert_page_is_clean, opened, rendered_views

    page = tiny_run / "results/explorer.html"
    table = pd.read_parquet(tiny_run / "results/tables/klom.parquet")
    with Browser(tmp_path) as browser:
        opened(browser, page)
        views = rendered_views(browser)
        sets = browser.evaluate("Array.from(document.querySelectorAll('#forget-set option'))"
                                ".map((option) => option.textContent)")
        assert_page_is_clean(browser, page)
    assert sets == list(dict.fromkeys(table["forget_set"]))
    assert views["overview"]["rows"] == len(
        table[table["forget_set"] == sets[0]][["method", "config_id"]].drop_duplicates())
    assert all(views[name]["marks"] > 20 for name in VIEWS[1:])
