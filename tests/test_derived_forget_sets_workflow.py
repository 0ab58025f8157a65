"""Derived forget sets through the workflow, on digits (FORGET-SETS.md section 7).

One run trains the subset models behind the margin datamodel and scores do_nothing on
two random sets and a worst-case proxy set (30 models per side); a second config in
the same folder makes the PC and nearest-neighbour sets from the same files. The
thresholds are those FORGET-SETS.md measured (1000 subset models, 60 per side),
loosened for 300 subset models and 30 per side.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
from workflow import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

RANDOM = {"random_a": {"kind": "random", "size": 50, "seed": 0},
          "random_b": {"kind": "random", "size": 50, "seed": 1}}
WORST = {"worst_inout": {"kind": "worst_case", "size": 50, "proxy": "inout_klom"}}
STRUCTURED = {
    "pc1_top": {"kind": "datamodel_pc", "component": 1, "size": 50},
    "pc1_both": {"kind": "datamodel_pc", "component": 1, "size": 100, "side": "both"},
    "pc2_both": {"kind": "datamodel_pc", "component": 2, "size": 100, "side": "both"},
    "neighbours": {"kind": "nearest_neighbors", "anchor": 6, "size": 50,
                   "embedding": "penultimate", "models": 5},
}


def digits_config(forget_sets) -> dict:
    """The default recipe (config.yaml) with fewer models."""
    return {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [256]},
        "train": {"epochs": 10, "batch_size": 16, "lr": 0.1, "peak_epoch": 2},
        "models": {"n_originals": 30, "n_oracles": 30, "n_holdout_oracles": 2,
                   "seeds_per_job": 32},
        "forget_sets": forget_sets,
        "methods": {"do_nothing": None},
        "datamodels": {"n_subset_models": 300, "seeds_per_job": 150},
        "klom": {"bins": 20},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("derived")
    write_config(folder, digits_config(RANDOM | WORST))
    snakemake(folder, "--cores", "2")
    write_config(folder, digits_config(RANDOM | WORST | STRUCTURED), name="structured.yaml")
    targets = [f"results/forget_sets/{name}.npy" for name in STRUCTURED]
    snakemake(folder, "--cores", "2", *targets, config_name="structured.yaml")
    return folder


def forget_set(run, name):
    sidecar = json.loads((run / f"results/forget_sets/{name}.json").read_text())
    return np.load(run / f"results/forget_sets/{name}.npy"), sidecar


def train_labels(run):
    points = pd.read_parquet(run / "results/data/points.parquet")
    return points.loc[points["split"] == "train", "label"].to_numpy()


def largest_class_fraction(labels, members, classes=1):
    counts = np.sort(np.bincount(labels[members], minlength=10))[::-1]
    return counts[:classes].sum() / len(members)


def test_pc_sets_are_structured(run):
    labels = train_labels(run)
    top, sidecar = forget_set(run, "pc1_top")
    assert sidecar["kind"] == "datamodel_pc" and sidecar["spec"]["rows"] == "target"
    assert len(sidecar["scores"]) == 50 and sidecar["cut_score"] is not None
    # Measured 0.94 at 250 subset models, 1.00 at 1000; random sets of 50: 99th pct 0.26.
    assert largest_class_fraction(labels, top) >= 0.5
    # Top-two-class fraction of both ends; random sets of 100: 99th percentile 0.35.
    # Measured here (300 subset models) 0.71 for PC1 and 0.55 for PC2, whose singular
    # value is within 6% of its neighbours' (FORGET-SETS.md: 0.72-0.91 at 1000).
    for name, least in (("pc1_both", 0.6), ("pc2_both", 0.45)):
        members, _ = forget_set(run, name)
        assert largest_class_fraction(labels, members, classes=2) >= least, name
    # The top half of `both` is the top of the component: nested as KLOM's sets 4-6.
    both, _ = forget_set(run, "pc1_both")
    assert set(top) <= set(both)
    assert "margin_datamodel" in sidecar["inputs"]


def test_nearest_neighbours_share_the_anchors_class(run):
    labels = train_labels(run)
    members, sidecar = forget_set(run, "neighbours")
    assert 6 in members and len(members) == 50
    # Measured 0.91 over 30 anchors; the class base rate is 0.10.
    assert np.mean(labels[members] == labels[6]) >= 0.7
    assert len(sidecar["inputs"]["originals"]) == 1  # the shard holding originals 0-4


def test_worst_case_proxy_is_hard_to_forget_and_says_it_is_a_proxy(run):
    members, sidecar = forget_set(run, "worst_inout")
    assert sidecar["proxy"] is True and sidecar["proxy_name"] == "inout_klom"
    assert len(members) == 50
    table = pd.read_parquet(run / "results/tables/klom.parquet")
    forget = table[(table["method"] == "do_nothing") & (table["split"] == "forget")]
    median = dict(zip(forget["forget_set"], forget["klom_p50"]))
    # Measured: inout_klom 10.0 against 1.2-1.5 for random sets of 50.
    assert median["worst_inout"] >= max(median["random_a"], median["random_b"]) + 3
    kinds = table.drop_duplicates("forget_set").set_index("forget_set")
    assert kinds.loc["worst_inout", "forget_set_kind"] == "worst_case"
    assert kinds.loc["worst_inout", "forget_set_proxy"] == "inout_klom"
    assert kinds.loc["random_a", "forget_set_kind"] == "random"
    assert pd.isna(kinds.loc["random_a", "forget_set_proxy"])
    summary = (run / "results/tables/klom_summary.md").read_text()
    assert "proxy `inout_klom`" in summary and "it bounds nothing" in summary
    for paper in ("paper_klom.md", "paper_klom.tex"):
        text = (run / "results/tables" / paper).read_text()
        assert "Worst-case proxy forget sets: worst_inout (inout_klom)." in text, paper


def test_static_sets_get_a_sidecar_too(run):
    members, sidecar = forget_set(run, "random_a")
    assert sidecar == {"name": "random_a", "kind": "random", "spec": RANDOM["random_a"],
                       "size": 50, "n_train": 1438}
    assert len(members) == 50


def test_a_changed_margin_datamodel_remakes_the_set_and_its_oracles(run):
    assert planned_jobs(run) == {}
    for shard in (0, 1):  # newer than every file made from them
        os.utime(run / f"results/logits/subset/shard_{shard}.npy")
    planned = planned_jobs(run)
    assert planned.get("derive_forget_set") == 1  # worst_inout reads the subset models
    assert planned.get("train_oracles") == 1  # its one oracle shard, none of the random sets
    planned = planned_jobs(run, config_name="structured.yaml")
    assert planned.get("fit_margin_datamodel") == 1


def test_a_subpopulation_end_to_end_on_cifar100_files(tmp_path):
    """Coarse labels, the subclass column, the set, its oracles, its KLOM rows."""
    from dataset_files import write_cifar100

    from klomflow.io import load_torch

    # 3 points of fine class 12 among the 19 of superclass 2 (fine // 5 in these files).
    train_fine = np.array([12, 10, 12, 11, 13, 14, 12] + [3, 40, 77, 10, 11] * 6 + [99, 50, 5])
    write_cifar100(tmp_path / "data", train_fine=train_fine, n_test=10)
    config = {
        "dataset": {"name": "cifar100", "data_dir": "data", "verify_checksums": False,
                    "labels": "coarse"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "ensemble": False},
        "models": {"n_originals": 2, "n_oracles": 2, "n_holdout_oracles": 2, "seeds_per_job": 4},
        "forget_sets": {"fine_12": {"kind": "subpopulation", "subclass": 12}},
        "methods": {"do_nothing": None},
        "klom": {"bins": 10},
    }
    write_config(tmp_path, config)
    snakemake(tmp_path, "--cores", "2", "results/tables/klom.parquet")
    points = pd.read_parquet(tmp_path / "results/data/points.parquet")
    train = points[points["split"] == "train"]
    np.testing.assert_array_equal(train["subclass"], train_fine)
    np.testing.assert_array_equal(train["label"], train_fine // 5)
    members, sidecar = forget_set(tmp_path, "fine_12")
    np.testing.assert_array_equal(members, [0, 2, 6])
    assert sidecar["kind"] == "subpopulation" and sidecar["spec"]["select"] == "first"
    oracles = load_torch(tmp_path / "results/models/oracle/fine_12/shard_0.pt")
    for model in oracles["models"]:
        assert not np.isin(members, model["train_indices"]).any()
        # The rest of superclass 2 stays in training: forgetting a subclass, not a class.
        superclass = np.flatnonzero(train_fine // 5 == 2)
        assert np.isin(superclass, model["train_indices"]).sum() == len(superclass) - 3 == 16
    logits = np.load(tmp_path / "results/logits/oracle/fine_12/shard_0.npy")
    assert logits.shape[-1] == 20  # trained on the superclasses
    table = pd.read_parquet(tmp_path / "results/tables/klom.parquet")
    assert set(table["forget_set_kind"]) == {"subpopulation"}
