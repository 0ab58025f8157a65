"""The privacy rules on the tiny config: added to a finished run, they compute only their own
files; the tables hold the reference row and are rebuilt byte-identically."""

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow import planned_jobs, reordered, reversed_keys, snakemake, tiny_config, write_config

from klomflow.io import read_parquet_metadata

pytestmark = pytest.mark.slow

# The explorer page shows the privacy metrics when they are computed, so it is rebuilt too.
PRIVACY_RULES = {"compute_privacy", "compute_privacy_reference", "reduce_privacy",
                 "make_privacy_tables", "plot_privacy", "build_explorer", "all"}
OUTPUTS = ["results/tables/privacy.parquet", "results/tables/paper_privacy.md",
           "results/tables/paper_privacy.tex", "results/tables/paper_privacy.parquet",
           "results/privacy/random_30/oracle_holdout/reference.parquet",
           "results/report/class_5/privacy_vs_klom.png"]


def with_privacy(config):
    config = dict(config)
    config["privacy"] = {"metrics": ["competition", "ulira", "lira"], "max_points": 50}
    return config


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory):
    """A finished tiny run without privacy keys, then the same run with them added."""
    folder = tmp_path_factory.mktemp("tiny_privacy")
    write_config(folder, tiny_config())
    snakemake(folder, "--cores", "2")
    assert not (folder / "results/privacy").exists()
    write_config(folder, with_privacy(tiny_config()), "privacy.yaml")
    jobs = planned_jobs(folder, "privacy.yaml")
    snakemake(folder, "--cores", "2", config_name="privacy.yaml")
    return folder, jobs


def test_adding_privacy_keys_computes_only_the_new_files(privacy_run):
    folder, jobs = privacy_run
    assert set(jobs) <= PRIVACY_RULES, jobs
    # 2 forget sets x 5 settings + exploding on random_30 = 11 settings; 2 reference rows.
    assert jobs["compute_privacy"] == 11 and jobs["compute_privacy_reference"] == 2
    assert jobs["plot_privacy"] == 2 and jobs["reduce_privacy"] == 1
    assert planned_jobs(folder, "privacy.yaml") == {}


def test_privacy_table_has_the_reference_row(privacy_run):
    folder, _ = privacy_run
    table = pd.read_parquet(folder / "results/tables/privacy.parquet")
    for forget_set in ("random_30", "class_5"):
        reference = table[(table["forget_set"] == forget_set)
                          & (table["method"] == "oracle_holdout")]
        assert list(reference["config_id"]) == ["reference"] * 3
        assert list(reference["split"]) == ["forget", "retain", "val"]
        forget = reference[reference["split"] == "forget"].iloc[0]
        assert 0 <= forget["competition_forget_quality"] <= 1
        assert 0 <= forget["ulira_auc"] <= 1 and 0 <= forget["lira_auc"] <= 1
        assert forget["competition_accuracy_definition"] == "top1"
        assert np.isfinite(forget["competition_score"])
        assert forget["n_points"] == 30 if forget_set == "random_30" else forget["n_points"] > 0
    # Retain and validation: the seeded subset of max_points.
    assert (table.loc[table["split"] != "forget", "n_points"] <= 50).all()
    assert table.loc[table["split"] == "forget", "competition_score"].notna().any()
    assert table.loc[table["split"] != "forget", "competition_score"].isna().all()
    assert table.loc[table["split"] != "forget", "lira_auc"].isna().all()
    # Every run of `exploding` diverged: a NaN row that says why.
    exploding = table[(table["method"] == "exploding") & (table["split"] == "forget")].iloc[0]
    assert exploding["n_diverged"] == 4 and exploding["reason"]
    assert np.isnan(exploding["ulira_auc"])
    points = pd.read_parquet(folder / "results/privacy/random_30/oracle_holdout/reference.parquet")
    assert {"point", "split", "competition_epsilon", "competition_points", "ulira_point_auc",
            "lira_point_auc"} <= set(points.columns)
    assert (points["split"] == "forget").sum() == 30
    assert read_parquet_metadata(folder / "results/tables/privacy.parquet")["config_hash"]


def test_paper_privacy_table_names_the_selection(privacy_run):
    folder, _ = privacy_run
    markdown = (folder / "results/tables/paper_privacy.md").read_text()
    assert "noise floor (oracle_holdout)" in markdown
    assert "never selected on these privacy metrics" in markdown
    latex = (folder / "results/tables/paper_privacy.tex").read_text()
    assert "\\begin{tabular}" in latex and "noise floor" in latex
    frame = pd.read_parquet(folder / "results/tables/paper_privacy.parquet")
    klom = pd.read_parquet(folder / "results/tables/klom.parquet")
    selected = klom[klom["selected"] & (klom["split"] == "forget")]
    assert set(zip(frame["forget_set"], frame["method"], frame["config_id"])) == set(
        zip(selected["forget_set"], selected["method"], selected["config_id"]))


def test_privacy_files_are_rebuilt_byte_identically(privacy_run):
    folder, _ = privacy_run
    before = {path: (folder / path).read_bytes() for path in OUTPUTS}
    snakemake(folder, "--cores", "2", "--forcerun", "compute_privacy",
              "compute_privacy_reference", config_name="privacy.yaml")
    for path in OUTPUTS:
        assert (folder / path).read_bytes() == before[path], path


def test_a_finished_run_plans_nothing_after_its_config_is_saved_in_another_key_order(
        privacy_run):
    # Snakemake compares params by repr(), where a dict's key order shows; the same config
    # with its keys sorted (yaml.safe_dump) or reversed must not retrain anything.
    folder, _ = privacy_run
    config = yaml.safe_load((folder / "privacy.yaml").read_text())
    (folder / "sorted_keys.yaml").write_text(yaml.safe_dump(config))
    write_config(folder, reordered(config, reversed_keys), "reversed_keys.yaml")
    assert planned_jobs(folder, "sorted_keys.yaml") == {}
    assert planned_jobs(folder, "reversed_keys.yaml") == {}
