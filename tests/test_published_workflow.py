"""The workflow on published folders (both layouts): it trains nothing and scores the fixture."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from published_files import Fixture, published_state_dict, write_easydub, write_klom_models
from workflow import planned_jobs, snakemake, write_config

from klomflow.data.published.layout import file_sha256
from klomflow.io import load_torch, read_parquet_metadata
from klomflow.metrics.klom import KlomOptions, klom_per_point
from klomflow.training.published_models import published_to_klomflow_keys

pytestmark = pytest.mark.slow

TRAINING_RULES = {"train_originals", "train_oracles", "train_subset_models"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return Fixture(tmp_path_factory.mktemp("published_data"))


def published_config(fixture, layout, path, methods, forget_ids=(2, 10)):
    return {
        "dataset": {"name": "cifar10", "data_dir": str(fixture.data_dir),
                    "verify_checksums": False},
        "model": {"name": "resnet9"},
        "train": {"epochs": 1, "batch_size": 16},
        "models": {"n_originals": 4, "n_oracles": 2, "n_holdout_oracles": 2,
                   "seeds_per_job": 2, "source": {"layout": layout, "path": str(path)}},
        "forget_sets": {f"set_{k}": {"kind": "published", "id": k} for k in forget_ids},
        "methods": methods,
        "klom": {"bins": 10},
    }


@pytest.fixture(scope="module", params=["klom_models", "easydub"])
def published_run(request, fixture, tmp_path_factory):
    layout = request.param
    folder = tmp_path_factory.mktemp(f"run_{layout}")
    writer = write_klom_models if layout == "klom_models" else write_easydub
    source = writer(fixture, folder / "published")
    # Methods that run (on the EasyDUB folder only, to keep CI short) import the originals;
    # set 10 (unsorted) matters for EasyDUB's forget files only.
    methods, forget_ids = {"do_nothing": None}, (2,)
    if layout == "easydub":
        methods["gradient_ascent"] = {"lr": 0.01, "epochs": 1}
        methods["oracle_matching"] = {"epochs": 1, "n_oracles": 2}
        forget_ids = (2, 10)
    write_config(folder, published_config(fixture, layout, source, methods, forget_ids))
    planned = planned_jobs(folder)
    result = snakemake(folder, "--cores", "2")
    return {"layout": layout, "folder": folder, "source": source, "planned": planned,
            "output": result.stdout + result.stderr}


def test_nothing_is_trained(published_run):
    assert not TRAINING_RULES & set(published_run["planned"])
    assert "gather_oracle_margins" in published_run["planned"]
    assert not (published_run["folder"] / "results/logits/original").exists()
    assert not (published_run["folder"] / "results/models/oracle").exists()
    if published_run["layout"] == "klom_models":  # do_nothing only: no checkpoint is read
        assert "import_originals" not in published_run["planned"]
        assert "unlearn" not in published_run["planned"]
    else:
        assert published_run["planned"]["import_originals"] == 2


def test_klom_of_do_nothing_and_of_the_reference_row_equal_klom_of_the_fixture(
        published_run, fixture):
    results = published_run["folder"] / "results"
    table = pd.read_parquet(results / "tables/klom.parquet")
    options = KlomOptions(bins=10)
    splits = {"forget": None, "retain": None, "val": None}
    for name, forget_id in (("set_2", 2), ("set_10", 10)):
        if not (results / "klom" / name).exists():
            assert published_run["layout"] == "klom_models" and name == "set_10"
            continue
        oracle = fixture.oracle_margins[forget_id]
        forget = fixture.forget_sets[forget_id]
        in_forget = np.zeros(fixture.n_train, dtype=bool)
        in_forget[forget] = True
        splits = {"forget": np.flatnonzero(in_forget), "retain": np.flatnonzero(~in_forget),
                  "val": np.arange(fixture.n_train, len(fixture.labels))}
        expected = {
            "do_nothing": klom_per_point(fixture.original_margins, oracle[:2], options),
            "oracle_holdout": klom_per_point(oracle[2:4], oracle[:2], options),
        }
        for method, klom in expected.items():
            folder = "do_nothing" if method == "do_nothing" else "oracle_holdout"
            rows = table[(table["forget_set"] == name) & (table["method"] == method)]
            per_point = pd.read_parquet(next((results / f"klom/{name}/{folder}").glob("*.parquet")))
            np.testing.assert_allclose(per_point["klom"].to_numpy(), klom, rtol=1e-6)
            for split, points in splits.items():
                p95 = rows.loc[rows["split"] == split, "klom_p95"].item()
                assert p95 == pytest.approx(np.percentile(klom[points], 95), rel=1e-6)


def test_the_easydub_check_is_printed_beside_both_references(published_run):
    log = (published_run["folder"] / "results/logs/reduce_klom.log").read_text()
    if published_run["layout"] != "easydub":
        assert "EasyDUB check" not in log
        return
    assert "EasyDUB check: p95 KLOM of do_nothing on forget set 2 (set_2)" in log
    assert "EasyDUB check" in published_run["output"]  # on the console too
    # 4 models, 10 bins here: the check says it is not comparable with the references.
    assert "Not comparable with either: 4 originals (the reference: 100)" in log


def test_do_nothing_uses_the_published_margins(published_run, fixture):
    results = published_run["folder"] / "results"
    unlearned = np.load(next((results / "margins/unlearned/set_2/do_nothing").glob("*.npy")))
    np.testing.assert_array_equal(unlearned, fixture.original_margins)
    np.testing.assert_array_equal(np.load(results / "margins/original.npy"),
                                  fixture.original_margins)
    name = "set_10" if published_run["layout"] == "easydub" else "set_2"
    forget_id = int(name.removeprefix("set_"))
    np.testing.assert_array_equal(np.load(results / f"margins/oracle/{name}.npy"),
                                  fixture.oracle_margins[forget_id][:2])
    np.testing.assert_array_equal(np.load(results / f"margins/oracle_holdout/{name}.npy"),
                                  fixture.oracle_margins[forget_id][2:4])
    forget = np.load(results / f"forget_sets/{name}.npy")
    np.testing.assert_array_equal(forget, np.sort(fixture.forget_sets[forget_id]))


def test_tables_record_the_source(published_run):
    results = published_run["folder"] / "results"
    for table in ("klom.parquet", "accuracy.parquet", "paper_klom.parquet"):
        metadata = read_parquet_metadata(results / "tables" / table)
        source = metadata["source"]
        assert source["layout"] == published_run["layout"]
        assert source["path"] == str(published_run["source"])
        files = source["files"]
        forget_file = ("forget_set_indices/CIFAR10/forget_set_2.npy"
                       if published_run["layout"] == "klom_models"
                       else "forget_sets/cifar10/forget_set_2.npy")
        assert files[forget_file] == file_sha256(published_run["source"] / forget_file)
        assert metadata["seeds"]["original"] == [-1] * 4
    accuracy = pd.read_parquet(results / "tables/accuracy.parquet")
    assert (accuracy.loc[accuracy["method"] == "original", "seed"] == -1).all()


def test_unlearning_starts_from_the_imported_originals(published_run, fixture):
    results = published_run["folder"] / "results"
    if published_run["layout"] != "easydub":  # do_nothing only: no checkpoint is imported
        assert not (results / "models").exists()
        return
    checkpoint = load_torch(results / "models/original/shard_1.pt")
    record = checkpoint["models"][1]
    assert record["index"] == 3 and record["seed"] == -1
    expected = published_to_klomflow_keys(published_state_dict(fixture.models[3]))
    for key, value in expected.items():
        torch.testing.assert_close(record["state_dict"][key], value, rtol=0, atol=0)
    assert record["source_sha256"] == file_sha256(record["source_file"])
    runs_folder = results / "runs/unlearned/set_2/gradient_ascent"
    runs = pd.read_parquet(next(runs_folder.glob("*.parquet")))
    assert (runs["changed_weights"] > 0).all()
    assert "reproduces its published margins" in (
        results / "logs/import_originals/shard_0.log").read_text()
    manifest = json.loads((results / "source/manifest.json").read_text())
    assert "models/cifar10/pretrain/resnet9/id_3_epoch_23.pt" in manifest
