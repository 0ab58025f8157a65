"""Unlearning jobs run SGD and Adam methods as one ensemble (klomflow/unlearning/twins/)."""

import copy

import numpy as np
import pytest
import torch
from workflow import tiny_config

from klomflow.config import MethodSetting, validate
from klomflow.jobs.runs import dataset_for, train_shard, unlearn_shard
from klomflow.training.models import build_model
from klomflow.unlearning import twins as ensemble_unlearning
from klomflow.unlearning.methods import METHODS
from klomflow.unlearning.methods.base import UnlearningData

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    config = validate(tiny_config())
    # tiny.yaml unlearns one model at a time; these tests are about the ensemble path.
    config["train"]["ensemble"] = True
    config["models"].update(n_originals=3, seeds_per_job=3)
    checkpoint, _ = train_shard(config, "original", 0, tmp_path_factory.mktemp("resume"),
                                log=lambda message: None, device=CPU)
    return config, checkpoint


def stringent_params(name):
    """Each twin's hard case: two epochs or more, optimiser state carried across steps,
    several batches with a short last one."""
    params = dict(METHODS[name].defaults)
    if name in ("oracle_matching", "dmm"):
        # 120 fine-tuning points (30 forgotten + 90 retained) in batches of 32 (the last 24),
        # Adam's moments carried over three epochs, the learning rate halved after each.
        params |= {"epochs": 3, "batch_size": 32, "lr": 1e-2, "lr_decay": 0.5}
        if name == "oracle_matching":
            params["n_oracles"] = 3  # of the 6 held-out oracles of random_extras
        return params
    if name == "bad_teaching":
        # 30 forgotten + 30% of the retained points in batches of 64 (the last short), Adam's
        # moments carried over two epochs, a temperature other than 1.
        return params | {"epochs": 2, "temperature": 2.0}
    # Momentum, weight decay and two epochs: optimiser state carried across steps.
    params |= {"epochs": 2, "momentum": 0.9, "weight_decay": 1e-3}
    if name == "gradient_ascent":
        # Several forget batches (30 points: 8, 8, 8, 6), so that each model's own batch
        # order matters: with one batch, a batch order shared by all models would pass.
        params["batch_size"] = 8
    if name in ("neggrad_plus", "random_label", "salun"):
        # A forget batch smaller than the forget set (30 points: 16, 14): neggrad_plus's
        # forget cycle restarts; random_label's and salun's relabelled batches follow
        # their shuffle (salun's mask, half of the weights by default, sums the same
        # batches' gradients).
        params["forget_batch_size"] = 16
    if name == "scrub":
        # Max-steps in the first epoch only (forget batches 16, 14), the learning rate a
        # fifth from the second epoch on, the temperature's T^2 and both retain weights
        # away from their defaults.
        params |= {"msteps": 1, "forget_batch_size": 16, "lr_decay_epochs": [1],
                   "lr_decay_rate": 0.2, "alpha": 0.5, "gamma": 0.7, "temperature": 2.0}
    return params


# Float32 tolerance on weights (atol) and logits, per twin. bad_teaching's Adam turns float32
# rounding in gradients near zero into differences of a few 1e-5 on a few weights (about
# 1% of the first layer's; 3e-5 here) and up to ~1e-4 on logits; in float64 it is the
# method to 1e-12 (the test below), so the gap is rounding, not the twin.
FLOAT32_ATOL = {"bad_teaching": (1e-4, 3e-4)}


def random_extras(config, n_forget=30):
    """Held-out oracle logits and the forget set's datamodel rows of the right shapes, for
    oracle_matching and dmm."""
    dataset = dataset_for(config)
    n_points, n_classes = len(dataset.eval_y), dataset.n_classes
    rng = np.random.default_rng(0)
    return {
        "holdout_oracle_logits": rng.normal(size=(6, n_points, n_classes)).astype(np.float32),
        "datamodel_rows": (0.05 * rng.normal(size=(n_forget, n_points, n_classes))
                           ).astype(np.float32),
    }


@pytest.mark.parametrize("name", sorted(ensemble_unlearning.TOGETHER))
def test_an_ensemble_unlearns_as_the_method_does_one_model_at_a_time(originals, name):
    config, checkpoint = originals
    params = stringent_params(name)
    extras = random_extras(config)
    setting = MethodSetting(name, name, params, "0123456789", ("random_30",))
    forget = np.arange(0, 90, 3)
    messages = []
    joint, joint_runs, joint_states = unlearn_shard(config, setting, "random_30", forget,
                                                    checkpoint, log=messages.append, device=CPU,
                                                    extras=extras)
    assert any("unlearning 3 models together" in message for message in messages)
    alone_config = dict(config, train=dict(config["train"], ensemble=False))
    alone_messages = []
    alone, alone_runs, alone_states = unlearn_shard(alone_config, setting, "random_30", forget,
                                                    checkpoint, log=alone_messages.append,
                                                    device=CPU, extras=extras)
    weights_atol, logits_atol = FLOAT32_ATOL.get(name, (1e-5, 1e-4))
    for joint_state, alone_state in zip(joint_states, alone_states):
        assert list(joint_state) == list(alone_state)
        for key in alone_state:
            torch.testing.assert_close(joint_state[key], alone_state[key], atol=weights_atol,
                                       rtol=1e-4)
    np.testing.assert_allclose(joint, alone, atol=logits_atol)
    assert (joint_runs["changed_weights"] > 0).all()
    assert list(joint_runs.columns) == list(alone_runs.columns)
    assert (joint_runs["unlearning_seconds"] > 0).all()
    # A model's share of the ensemble's wall time is flagged as such; one model's own is not.
    assert joint_runs["unlearning_seconds_amortised"].tolist() == [True] * 3
    assert alone_runs["unlearning_seconds_amortised"].tolist() == [False] * 3
    # The method's own messages (e.g. oracle_matching's drawn oracles) are logged alike.
    assert ([message for message in messages if message.startswith(f"{name}:")]
            == [message for message in alone_messages if message.startswith(f"{name}:")])


@pytest.mark.parametrize("name", sorted(ensemble_unlearning.TOGETHER))
def test_in_float64_a_twin_is_the_method_to_rounding(originals, name):
    """Float32 rounding that Adam can amplify where gradients are near zero (matching
    targets close to the original's logits) is gone in float64: any difference left
    would be the twin's own."""
    config, checkpoint = originals
    dataset = dataset_for(config)
    forget = torch.arange(0, 90, 3)
    retain = torch.as_tensor(np.setdiff1d(np.arange(dataset.n_train), forget.numpy()))
    params = stringent_params(name)
    extras = random_extras(config)

    def models_and_datas():
        models, datas = [], []
        for member, record in enumerate(checkpoint["models"]):
            model = build_model(config["model"], dataset.input_shape, dataset.n_classes, 0)
            model.load_state_dict(record["state_dict"])
            models.append(model.double())
            datas.append(UnlearningData(
                dataset.train_x.double(), dataset.train_y, forget, retain, dataset.n_classes,
                torch.Generator().manual_seed(100 + member), CPU, log=lambda message: None,
                extras=extras))
        return models, datas

    models, datas = models_and_datas()
    alone = [METHODS[name].unlearn(model, data, params) for model, data in zip(models, datas)]
    models, datas = models_and_datas()
    joint = ensemble_unlearning.together(METHODS[name])(models, datas, params)
    for alone_model, joint_model, record in zip(alone, joint, checkpoint["models"]):
        for key, value in alone_model.state_dict().items():
            assert not torch.equal(value.float(), record["state_dict"][key])
            torch.testing.assert_close(joint_model.state_dict()[key], value, atol=1e-12, rtol=0)


def test_a_method_whose_version_moved_on_runs_one_model_at_a_time(originals, monkeypatch):
    from dataclasses import replace

    config, checkpoint = originals
    bumped = replace(METHODS["gradient_descent"], version="99")
    assert ensemble_unlearning.together(bumped) is None
    monkeypatch.setitem(METHODS, "gradient_descent", bumped)
    setting = MethodSetting("gradient_descent", "gradient_descent",
                            bumped.defaults | {"epochs": 1}, "0123456789", ("random_30",))
    messages = []
    unlearn_shard(config, setting, "random_30", np.arange(30), checkpoint, log=messages.append,
                  device=CPU)
    assert not any("together" in message for message in messages)


def unequal_datas(change):
    """Two tiny MLPs and their UnlearningData, model 1's changed by `change(fields)`."""
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = torch.randn(40, 4, generator=generator), torch.arange(40) % 3
    models = [build_model({"name": "mlp", "hidden": [5]}, (4,), 3, seed) for seed in (0, 1)]
    datas = []
    for member in range(2):
        fields = {"train_x": train_x, "train_y": train_y, "forget_indices": torch.arange(10),
                  "retain_indices": torch.arange(10, 39), "n_classes": 3}
        if member == 1:
            change(fields)
        datas.append(UnlearningData(**fields, generator=torch.Generator().manual_seed(member),
                                    device=CPU, log=lambda message: None,
                                    extras={"holdout_oracle_logits": np.zeros((2, 50, 3),
                                                                              np.float32),
                                            "datamodel_rows": np.zeros((10, 50, 3),
                                                                       np.float32)}))
    return models, datas


UNEQUAL = {
    # One point moved from retain to forget: as many points in all, but not per split.
    "forget": lambda fields: fields.update(forget_indices=torch.arange(11),
                                           retain_indices=torch.arange(11, 39)),
    # A larger retain set alone (model 0's is a subset of it).
    "retain": lambda fields: fields.update(retain_indices=torch.arange(10, 40)),
    "train_x": lambda fields: fields.update(train_x=fields["train_x"] + 1),
    "train_y": lambda fields: fields.update(train_y=torch.flip(fields["train_y"], [0])),
}


@pytest.mark.parametrize("difference", UNEQUAL)
@pytest.mark.parametrize("name", sorted(ensemble_unlearning.TOGETHER))
def test_a_twin_refuses_models_whose_data_differ(name, difference):
    """Every twin takes sizes, training set and device from model 0: a model with other
    forget or retain sizes or another training set is refused, not silently subsampled."""
    models, datas = unequal_datas(UNEQUAL[difference])
    params = stringent_params(name)
    with pytest.raises(ValueError, match=f"model 1.*{difference}"):
        ensemble_unlearning.together(METHODS[name])(models, datas, params)


def resnet9_params(name):
    """stringent_params cut to the ResNet-9 case's 13 training points (5 forgotten, 8
    retained; few, since a ResNet-9 step costs): every pass still has several batches, the
    last one short but never a single point (BatchNorm in training mode needs two), and
    optimiser state crosses steps."""
    params = stringent_params(name)
    if name in ("oracle_matching", "dmm"):
        # 5 forgotten + 5 retained fine-tuning points in batches of 4 (the last 2), 2 epochs.
        return params | {"epochs": 2, "batch_size": 4, "retain_mult": 1.0, "n_oracles": 2}
    if name == "bad_teaching":
        # 5 forgotten + round(0.3 * 8) = 2 retained points in batches of 4 (the last 3).
        return params | {"epochs": 1, "batch_size": 4}
    # One epoch (the MLP cases carry state across epochs); retain passes 3, 3, 2; forget
    # passes 3, 2 (neggrad_plus's forget cycle restarts; scrub max-steps, then min-steps
    # against its teachers, whose BatchNorm is in evaluation mode).
    return params | {"epochs": 1, "batch_size": 3, "forget_batch_size": 3}


@pytest.mark.parametrize("name", sorted(ensemble_unlearning.TOGETHER))
def test_in_float64_a_resnet9_twin_is_the_method_to_rounding(name):
    """The float64 test above with ResNet-9: grouped convolutions and per-model BatchNorm
    (running statistics included) on 12x12 images, the smallest ResNet-9 takes."""
    generator = torch.Generator().manual_seed(3)
    n_train, n_val, n_classes = 13, 3, 3
    eval_x = torch.randn(n_train + n_val, 3, 12, 12, generator=generator, dtype=torch.float64)
    train_x, train_y = eval_x[:n_train], torch.arange(n_train) % n_classes
    forget = torch.arange(0, n_train, 3)
    retain = torch.as_tensor(np.setdiff1d(np.arange(n_train), forget.numpy()))
    rng = np.random.default_rng(0)
    extras = {
        "holdout_oracle_logits": rng.normal(size=(3, n_train + n_val, n_classes)
                                            ).astype(np.float32),
        "datamodel_rows": (0.05 * rng.normal(size=(len(forget), n_train + n_val, n_classes))
                           ).astype(np.float32),
    }
    originals = [build_model({"name": "resnet9"}, (3, 12, 12), n_classes, seed).double()
                 for seed in (0, 1)]
    params = resnet9_params(name)

    def models_and_datas():
        models = [copy.deepcopy(original) for original in originals]
        datas = [UnlearningData(train_x, train_y, forget, retain, n_classes,
                                torch.Generator().manual_seed(100 + member), CPU,
                                log=lambda message: None, extras=extras, eval_x=eval_x)
                 for member in range(len(models))]
        return models, datas

    models, datas = models_and_datas()
    alone = [METHODS[name].unlearn(model, data, params) for model, data in zip(models, datas)]
    models, datas = models_and_datas()
    joint = ensemble_unlearning.together(METHODS[name])(models, datas, params)
    for alone_model, joint_model, original in zip(alone, joint, originals):
        moved = 0
        for key, value in alone_model.state_dict().items():
            moved += not torch.equal(value, original.state_dict()[key])
            # Float64 rounding that a few steps (Adam's where gradients are near zero) grow
            # to ~2e-10 at most; float32 rounding, or any difference in a twin's rule, is
            # orders of magnitude larger.
            torch.testing.assert_close(joint_model.state_dict()[key], value, atol=1e-9,
                                       rtol=1e-9, msg=lambda message, key=key: f"{key}: {message}")
        assert moved > len(alone_model.state_dict()) // 2  # not vacuous: the method acted
