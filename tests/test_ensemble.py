"""Ensemble training (klomflow/training/ensemble.py): the update rule, un-stacking, shards,
resume."""

import numpy as np
import pytest
import torch
from workflow import tiny_config

from klomflow.config import validate
from klomflow.jobs.runs import train_shard
from klomflow.training.ensemble import Ensemble, train_ensemble
from klomflow.training.loop import Recipe, train_model
from klomflow.training.models import build_model

CPU = torch.device("cpu")


def quiet(message):
    pass


def sequential_and_ensemble(model_config, x, y, member_indices, recipe, seeds):
    """Per model: the state after train_model, and the state after train_ensemble."""
    sequential = []
    for seed, keep in zip(seeds, member_indices):
        model = build_model(model_config, tuple(x.shape[1:]), 3, seed)
        train_model(model, x[keep], y[keep], recipe, torch.Generator().manual_seed(seed + 1), CPU,
                    log=quiet)
        sequential.append(model.state_dict())
    members = [build_model(model_config, tuple(x.shape[1:]), 3, seed) for seed in seeds]
    together = train_ensemble(members, x, y, member_indices, recipe,
                              [torch.Generator().manual_seed(seed + 1) for seed in seeds], CPU,
                              log=quiet)
    return sequential, together


def assert_states_close(sequential, together, atol):
    for alone, joint in zip(sequential, together):
        assert list(alone) == list(joint)
        for name in alone:
            assert alone[name].shape == joint[name].shape, name
            torch.testing.assert_close(joint[name].float(), alone[name].float(), rtol=1e-4,
                                       atol=atol, msg=name)


RECIPES = {
    # One step on the whole set: the update rule itself.
    "sgd, one step": Recipe(epochs=1, batch_size=64, lr=0.1, schedule="constant",
                            weight_decay=5e-4),
    # Three steps per epoch, the last one short (40 = 16 + 16 + 8, no drop_last), momentum
    # and Nesterov carried across steps, a per-step schedule.
    "sgd nesterov, short last batch": Recipe(epochs=2, batch_size=16, lr=0.1, nesterov=True,
                                             schedule="triangular", peak_epoch=1,
                                             label_smoothing=0.1),
    "adam": Recipe(epochs=2, batch_size=16, optimizer="adam", lr=1e-2, weight_decay=1e-3,
                   schedule="cosine"),
}


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_mlp_ensemble_steps_are_the_sequential_steps(recipe):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 4, generator=generator)  # flattened by the model
    y = torch.randint(0, 3, (50,), generator=generator)
    # Two models share training indices (oracles of one forget set), one has its own
    # (a subset model); all have 40 points.
    shared = torch.arange(40)
    own = torch.randperm(50, generator=generator)[:40]
    sequential, together = sequential_and_ensemble({"name": "mlp", "hidden": [12, 7]}, x, y,
                                                   [shared, shared, own], recipe, [3, 11, 5])
    assert_states_close(sequential, together, atol=1e-5)
    # Not vacuous: the models moved, and moved differently.
    initial = build_model({"name": "mlp", "hidden": [12, 7]}, (2, 4), 3, 3).state_dict()
    assert not torch.allclose(together[0]["layers.1.weight"], initial["layers.1.weight"])
    assert not torch.allclose(together[0]["layers.1.weight"], together[1]["layers.1.weight"])


def test_resnet9_ensemble_steps_are_the_sequential_steps():
    """Grouped convolutions, per-model BatchNorm (running statistics too) and the head."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, 16, 16, generator=generator)
    y = torch.randint(0, 3, (20,), generator=generator)
    recipe = Recipe(epochs=1, batch_size=8, lr=0.05, schedule="constant")  # 8 + 8 + 4
    sequential, together = sequential_and_ensemble({"name": "resnet9"}, x, y,
                                                   [torch.arange(20), torch.arange(20)], recipe,
                                                   [0, 1])
    assert_states_close(sequential, together, atol=1e-4)
    assert int(together[0]["0.1.num_batches_tracked"]) == 3
    assert not torch.allclose(together[0]["0.1.running_mean"], together[1]["0.1.running_mean"])


def test_unstacked_states_load_into_the_model_class_and_predict_alike():
    members = [build_model({"name": "resnet9"}, (3, 16, 16), 4, seed) for seed in (0, 1, 2)]
    ensemble = Ensemble(members).eval()
    x = torch.randn(3, 5, 3, 16, 16)
    with torch.no_grad():
        joint = ensemble(x)  # [M, classes, batch]
        for member, (model, state) in enumerate(zip(members, ensemble.unstack())):
            fresh = build_model({"name": "resnet9"}, (3, 16, 16), 4, 99)
            fresh.load_state_dict(state)  # strict: the same keys and shapes
            torch.testing.assert_close(joint[member].T, fresh.eval()(x[member]), atol=1e-5,
                                       rtol=1e-4)
            torch.testing.assert_close(joint[member].T, model.eval()(x[member]), atol=1e-5,
                                       rtol=1e-4)
    # The CUDA layout (NHWC activations and filters) computes the same.
    with torch.no_grad():
        torch.testing.assert_close(ensemble.use_channels_last()(x), joint, atol=1e-5, rtol=1e-4)


@pytest.fixture
def config():
    config = validate(tiny_config())
    # tiny.yaml trains one model at a time; these tests are about the ensemble path.
    config["train"]["ensemble"] = True
    config["models"]["resume_checkpoint_seconds"] = 0
    return config


def test_ensemble_shards_keep_the_checkpoint_format_and_are_deterministic(config, tmp_path):
    checkpoint, logits = train_shard(config, "oracle", 1, tmp_path / "a", forget_set="random_30",
                                     forget_indices=np.arange(30), log=quiet, device=CPU)
    again, again_logits = train_shard(config, "oracle", 1, tmp_path / "b",
                                      forget_set="random_30", forget_indices=np.arange(30),
                                      log=quiet, device=CPU)
    np.testing.assert_array_equal(logits, again_logits)
    config["train"]["ensemble"] = False
    alone, alone_logits = train_shard(config, "oracle", 1, tmp_path / "c", forget_set="random_30",
                                      forget_indices=np.arange(30), log=quiet, device=CPU)
    assert logits.shape == alone_logits.shape and logits.dtype == alone_logits.dtype
    assert set(checkpoint) == set(alone)
    for joint, single in zip(checkpoint["models"], alone["models"]):
        assert set(joint) == set(single)
        for key in ("index", "seed", "train_indices_sha256"):
            assert joint[key] == single[key]
        assert joint["train_seconds"] > 0
        # Its share of the ensemble's wall time, flagged as such; one model's own is not.
        assert joint["train_seconds_amortised"] is True
        assert single["train_seconds_amortised"] is False
        assert {name: value.shape for name, value in joint["state_dict"].items()} == {
            name: value.shape for name, value in single["state_dict"].items()}
    # Four epochs of the same steps: the two paths agree closely, not just in format.
    np.testing.assert_allclose(logits, alone_logits, atol=1e-3)


class Killed(Exception):
    pass


def test_a_killed_ensemble_job_resumes_at_its_last_epoch_checkpoint(config, tmp_path):
    _, uninterrupted = train_shard(config, "original", 0, tmp_path / "whole", log=quiet,
                                   device=CPU)
    messages = []

    def log_then_die(message):
        messages.append(message)
        if message.endswith("epoch checkpoint after epoch 2"):
            raise Killed(message)

    with pytest.raises(Killed):
        train_shard(config, "original", 0, tmp_path / "resume", log=log_then_die, device=CPU)
    assert (tmp_path / "resume" / "ensemble_0.pt").exists()
    messages.clear()
    _, resumed = train_shard(config, "original", 0, tmp_path / "resume", log=messages.append,
                             device=CPU)
    resuming = [m for m in messages if "resuming from epoch checkpoint after epoch 2" in m]
    assert len(resuming) == 2  # both models of the shard
    assert not [m for m in messages if ": epoch 1/" in m or ": epoch 2/" in m]
    assert [m for m in messages if ": epoch 4/4" in m]
    # The same weights as a run that was never killed: optimiser, generators and
    # BatchNorm state all came back.
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_a_shard_larger_than_the_ensemble_limit_trains_in_chunks(config, tmp_path, monkeypatch):
    from klomflow.jobs import runs

    config["models"].update(n_originals=3, seeds_per_job=3)
    _, whole = train_shard(config, "original", 0, tmp_path / "whole", log=quiet, device=CPU)
    monkeypatch.setattr(runs, "max_members", lambda device: 2)
    messages = []
    _, chunked = train_shard(config, "original", 0, tmp_path / "chunked", log=messages.append,
                             device=CPU)
    starts = [m for m in messages if m.startswith("training ")]
    assert [m.split(" models")[0] for m in starts] == ["training 2", "training 1"]
    np.testing.assert_allclose(chunked, whole, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_a_resnet9_ensemble_keeps_its_members_dtype(dtype):
    """BatchNorm's stacked weights and running statistics take the members' dtype: a float64
    or half-precision ResNet-9 ensemble runs, and unstacks to the members' dtype."""
    members = [build_model({"name": "resnet9"}, (3, 12, 12), 3, seed).to(dtype) for seed in (0, 1)]
    ensemble = Ensemble(members).eval()
    assert {value.dtype for name, value in ensemble.state_dict().items()
            if not name.endswith("num_batches_tracked")} == {dtype}
    x = torch.randn(2, 4, 3, 12, 12, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        joint = ensemble(x)
        assert joint.dtype == dtype
        if dtype == torch.float64:  # the models' own outputs, to float64 rounding
            for member, model in enumerate(members):
                torch.testing.assert_close(joint[member].T, model.eval()(x[member]), atol=1e-12,
                                           rtol=0)
    for state, model in zip(ensemble.unstack(), members):
        assert {name: value.dtype for name, value in state.items()} == {
            name: value.dtype for name, value in model.state_dict().items()}


def test_stacked_batchnorm_is_made_on_the_members_device():
    """Built where its members are (here the meta device), not on the CPU."""
    members = [build_model({"name": "resnet9"}, (3, 12, 12), 3, seed).to("meta") for seed in (0, 1)]
    ensemble = Ensemble(members)
    assert {value.device.type for value in ensemble.state_dict().values()} == {"meta"}
