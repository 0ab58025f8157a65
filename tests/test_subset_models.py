"""runs.py for datamodels: subset models (train_shard role "subset") and methods
that return logits instead of weights (Method.outputs_logits, e.g. dm_direct)."""

import numpy as np
import pytest
import torch
from workflow import tiny_config

from klomflow.config import MethodSetting, validate
from klomflow.jobs import runs
from klomflow.jobs.runs import train_shard, unlearn_shard
from klomflow.training.datamodels import fit_datamodels, masks_from_records
from klomflow.unlearning.methods import dm_direct, do_nothing

CPU = torch.device("cpu")  # exact comparisons: no mixed precision


@pytest.fixture(scope="module")
def config():
    config = validate(tiny_config())
    config["datamodels"] = {"n_subset_models": 5, "subset_fraction": 0.5, "ridge": 0.1,
                            "seeds_per_job": 3}
    return config


def test_subset_shards_train_on_half_subsets_and_resume(config, tmp_path):
    assert [len(runs.shard_indices(config, "subset", shard)) for shard in (0, 1)] == [3, 2]
    checkpoint, logits = train_shard(config, "subset", 1, tmp_path / "resume",
                                     log=lambda message: None, device=CPU)
    n_train = len(runs.dataset_for(config).train_y)
    masks = masks_from_records(checkpoint["models"], n_train)
    assert masks.shape == (2, n_train) and logits.shape[:2] == (2, n_train + 359)
    assert (masks.sum(axis=1) == round(n_train / 2)).all()
    assert not np.array_equal(masks[0], masks[1])
    assert [record["index"] for record in checkpoint["models"]] == [3, 4]
    # Model 3's subset is row 3 of subset_masks however the shards are cut.
    assert np.array_equal(np.flatnonzero(masks[0]),
                          runs.subset_training_indices(config, n_train, range(3, 4))[0])
    # A restarted job reuses finished models (same fingerprint, same logits).
    again, again_logits = train_shard(config, "subset", 1, tmp_path / "resume",
                                      log=lambda message: None, device=CPU)
    np.testing.assert_array_equal(logits, again_logits)


def test_seeds_per_job_falls_back_to_the_models_section(config):
    fallback = dict(config, datamodels={"n_subset_models": 5, "subset_fraction": 0.5})
    assert runs.seeds_per_job(fallback, "subset") == config["models"]["seeds_per_job"]


def test_a_method_returning_logits_is_scored_on_them(config, tmp_path, monkeypatch):
    monkeypatch.setitem(runs.METHODS, "dm_direct", dm_direct.METHOD)
    original, original_logits = train_shard(config, "original", 0, tmp_path / "resume",
                                             log=lambda message: None, device=CPU)
    n_train, n_points = len(runs.dataset_for(config).train_y), original_logits.shape[1]
    masks = np.random.default_rng(0).random((20, n_train)) < 0.5
    beta, _ = fit_datamodels(masks, np.random.default_rng(1).normal(
        size=(20, n_points, 10)).astype(np.float32), ridge=1.0)
    forget = np.array([3, 7, 50])
    setting = MethodSetting("dm_direct", "dm_direct", {"multiplier": 1.0}, "0123456789",
                            ("random_30",))
    logits, table, states = unlearn_shard(config, setting, "random_30", forget, original,
                                          log=lambda message: None, device=CPU,
                                          extras={"datamodel_rows": beta[forget]})
    expected = np.stack([model_logits - beta[forget].astype(np.float64).sum(axis=0)
                         for model_logits in original_logits])
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert not table["diverged"].any()
    for record, state in zip(original["models"], states):  # weights untouched
        assert all(torch.equal(record["state_dict"][name], value) for name, value in state.items())


def test_a_method_returning_a_model_is_unchanged(config, tmp_path):
    original, original_logits = train_shard(config, "original", 0, tmp_path / "resume",
                                            log=lambda message: None, device=CPU)
    setting = MethodSetting("do_nothing", "do_nothing", {}, "0123456789", ("random_30",))
    assert do_nothing.METHOD.outputs_logits is False
    logits, _, _ = unlearn_shard(config, setting, "random_30", np.array([3, 7]), original,
                                 log=lambda message: None, device=CPU)
    np.testing.assert_allclose(logits, original_logits, atol=1e-6)
