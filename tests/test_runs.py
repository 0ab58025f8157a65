"""Unlearning runs record how many weights each method changed, and warn at zero."""

import numpy as np
import torch
from workflow import tiny_config

from klomflow.config import MethodSetting, validate
from klomflow.jobs.runs import changed_weights, dataset_for, unlearn_shard
from klomflow.training.models import build_model
from klomflow.unlearning.methods import METHODS


def untrained_checkpoint(config, n_models=2):
    dataset = dataset_for(config)
    models = []
    for index in range(n_models):
        model = build_model(config["model"], dataset.input_shape, dataset.n_classes, index)
        models.append({"index": index, "seed": index, "state_dict": model.state_dict()})
    return {"models": models}


def test_changed_weights_counts_differing_entries():
    original = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    assert changed_weights(original, {"w": torch.zeros(2, 3), "b": torch.zeros(3)}) == 0
    moved = {"w": torch.zeros(2, 3), "b": torch.tensor([0.0, 1.0, -1.0])}
    assert changed_weights(original, moved) == 2


def run(setting, config):
    messages = []
    forget = np.arange(10)
    _, runs, _ = unlearn_shard(config, setting, "first_10", forget, untrained_checkpoint(config),
                               log=messages.append, device=torch.device("cpu"))
    return runs, messages


def test_a_method_that_changes_nothing_is_flagged():
    config = validate(tiny_config())
    # At an absurd selection threshold ssd dampens no weight: an honest no-op to flag.
    idle = MethodSetting("ssd", "ssd", METHODS["ssd"].defaults | {"alpha": 1e12}, "idle", ())
    runs, messages = run(idle, config)
    assert (runs["changed_weights"] == 0).all()
    warnings = [m for m in messages if m.startswith("WARNING") and "unchanged" in m]
    assert len(warnings) == len(runs) == 2

    moving = MethodSetting("gradient_descent", "gradient_descent",
                           METHODS["gradient_descent"].defaults | {"epochs": 1}, "moving", ())
    runs, messages = run(moving, config)
    assert (runs["changed_weights"] > 0).all()
    assert not [m for m in messages if m.startswith("WARNING")]


def test_doing_nothing_is_not_flagged():
    config = validate(tiny_config())
    runs, messages = run(MethodSetting("do_nothing", "do_nothing", {}, "none", ()), config)
    assert (runs["changed_weights"] == 0).all()
    assert not [m for m in messages if m.startswith("WARNING")]
