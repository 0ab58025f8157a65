"""The jobs behind derived forget sets (klomflow/jobs/forget_sets.py): files in, set and
sidecar out."""

import json

import numpy as np
import pytest
from workflow import tiny_config

from klomflow.config import model_seeds, training_seed, validate
from klomflow.forget_sets.kinds import ForgetSetError
from klomflow.jobs.forget_sets import (
    Job,
    derive,
    fit_margin_datamodel,
    pilot_worst_case,
    sidecar,
    write_forget_set,
)
from klomflow.metrics.margins import margins_from_logits
from klomflow.training.datamodels import fit_datamodels, subset_masks


def test_the_margin_datamodel_is_the_ridge_fit_to_training_margins(tmp_path):
    rng = np.random.default_rng(0)
    n_train, n_val, n_models = 12, 3, 40
    labels = rng.integers(0, 3, n_train)
    masks = subset_masks(n_train, n_models, 0.5, seed=1)
    # Two shards, as the subset-model rule writes them; validation columns are ignored.
    logits = rng.normal(size=(n_models, n_train + n_val, 3)).astype(np.float32)
    for shard, rows in enumerate((slice(0, 25), slice(25, None))):
        np.save(tmp_path / f"logits_{shard}.npy", logits[rows])
        np.save(tmp_path / f"masks_{shard}.npy", masks[rows])
    path = tmp_path / "margin_train.npy"
    fit_margin_datamodel([tmp_path / f"logits_{k}.npy" for k in range(2)],
                         [tmp_path / f"masks_{k}.npy" for k in range(2)], labels, 0.03, path)
    theta = np.load(path)
    assert theta.dtype == np.float32 and theta.shape == (n_train, n_train)
    margins = margins_from_logits(logits[:, :n_train], labels)
    expected, _ = fit_datamodels(masks, margins[:, :, None], 0.03)
    np.testing.assert_allclose(theta, expected[:, :, 0], rtol=1e-6, atol=1e-7)
    # Row i = source, column x = target: point i's effect on x's margin.
    assert not np.allclose(theta, theta.T)


def clustered_embedding(path, n=30):
    centres = np.eye(3) * 10
    rows = np.concatenate([centres[k] + np.random.default_rng(k).normal(size=(10, 3))
                           for k in range(3)])
    np.save(path, rows[:n])
    return rows


def nn_job(tmp_path, **change):
    spec = {"kind": "nearest_neighbors", "anchor": 12, "size": 10, "embedding": "file",
            "path": "e.npy", "metric": "cosine", "include_anchor": True} | change
    return Job("nn", spec, {"embedding": str(tmp_path / "e.npy")}, np.zeros(30, dtype=int),
               35, {}, log=lambda message: None)


def test_a_derived_set_and_its_sidecar(tmp_path):
    clustered_embedding(tmp_path / "e.npy")
    job = nn_job(tmp_path)
    indices, record = derive(job)
    np.testing.assert_array_equal(indices, np.arange(10, 20))  # the anchor's cluster
    assert record["kind"] == "nearest_neighbors" and record["size"] == 10
    assert len(record["scores"]) == 10 and record["cut_score"] < min(record["scores"])
    assert len(record["inputs"]["embedding"]) == 64  # the file's sha256
    write_forget_set(tmp_path / "nn.npy", tmp_path / "nn.json", indices, record)
    assert json.loads((tmp_path / "nn.json").read_text())["spec"] == job.spec
    np.testing.assert_array_equal(np.load(tmp_path / "nn.npy"), indices)


def test_a_derived_sets_errors_name_its_key(tmp_path):
    np.save(tmp_path / "e.npy", np.ones((31, 3)))  # neither 30 training nor 35 points
    with pytest.raises(ForgetSetError, match=r"^forget_sets\.nn\.path: "):
        derive(nn_job(tmp_path))


def test_worst_case_sidecars_say_proxy():
    record = sidecar("w", {"kind": "worst_case", "size": 3, "proxy": "self_influence"},
                     [1, 2, 3], 10)
    assert record["proxy"] is True and record["proxy_name"] == "self_influence"
    assert "proxy" not in sidecar("r", {"kind": "random", "size": 3}, [1, 2, 3], 10)


def test_the_bilevel_pilot_is_none_of_the_scored_models(tmp_path):
    config = validate(tiny_config() | {"forget_sets": {"w": {
        "kind": "worst_case", "size": 20, "proxy": "bilevel", "outer_steps": 1,
        "inner_epochs": 1}}, "methods": {"do_nothing": None}}, tmp_path)
    messages = []
    members, weights, _ = pilot_worst_case(config, "w", config["forget_sets"]["w"], ".",
                                           messages.append)
    assert len(members) == 20 and len(np.unique(members)) == 20
    assert weights.shape == (1438,)
    pilot = training_seed(config, "pilot", "w", 0)
    assert any(f"pilot model of w (seed {pilot})" in message for message in messages)
    scored = set(model_seeds(config, "original", None, 4)) | set(
        model_seeds(config, "oracle", "w", 8))
    assert pilot not in scored


def test_the_retrain_lower_level_trains_no_pilot(tmp_path):
    config = validate(tiny_config() | {"forget_sets": {"w": {
        "kind": "worst_case", "size": 20, "proxy": "bilevel", "outer_steps": 1,
        "inner_epochs": 1, "lower_level": "retrain", "w_lr": 1e-4}},
        "methods": {"do_nothing": None}}, tmp_path)
    messages = []
    job = Job("w", config["forget_sets"]["w"], {}, np.zeros(1438, dtype=np.int64), 1797,
              config, messages.append)
    members, record = derive(job)
    assert members.size == 20
    assert not any("pilot model of" in message for message in messages)
    assert any("no pilot model" in message for message in messages)
    # One tiny weight step cannot move the random start: the sidecar says so.
    assert len(record["warnings"]) == 1 and "random initial subset" in record["warnings"][0]
