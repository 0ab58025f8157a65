"""Shared fixtures: a tiny classification problem small enough for every test."""

import numpy as np
import pytest
import torch

from klomflow.training.loop import Recipe, train_model
from klomflow.training.models import build_model
from klomflow.unlearning.methods.base import UnlearningData

# Tests run beside other processes; one thread avoids oversubscribing the cores.
torch.set_num_threads(1)


def make_tiny_problem(n_train=120, n_features=8, n_classes=3, forget="random", seed=0):
    """(trained MLP, UnlearningData) on separable Gaussian blobs, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, n_features, generator=generator) * 3
    y = torch.arange(n_train) % n_classes
    x = centres[y] + torch.randn(n_train, n_features, generator=generator)
    if forget == "class":
        forget_indices = torch.nonzero(y == 0).squeeze(1)
    else:
        forget_indices = torch.sort(torch.randperm(n_train, generator=generator)[:12]).values
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[forget_indices] = False
    model = build_model({"name": "mlp", "hidden": [16]}, (n_features,), n_classes, init_seed=seed)
    recipe = Recipe(epochs=15, batch_size=16, lr=0.05, schedule="constant")
    train_model(model, x, y, recipe, torch.Generator().manual_seed(seed), torch.device("cpu"),
                log=lambda message: None)
    data = UnlearningData(
        train_x=x, train_y=y, forget_indices=forget_indices,
        retain_indices=torch.nonzero(keep).squeeze(1), n_classes=n_classes, eval_x=x,
        generator=torch.Generator().manual_seed(seed + 1), device=torch.device("cpu"),
        log=lambda message: None,
    )
    return model, data


@pytest.fixture
def tiny_problem():
    return make_tiny_problem()


@pytest.fixture
def tiny_class_problem():
    return make_tiny_problem(forget="class")


def weights_of(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def max_weight_change(before, model):
    after = model.state_dict()
    return max(float((after[name] - before[name]).abs().max()) for name in before
               if before[name].is_floating_point())


@pytest.fixture
def numpy_rng():
    return np.random.default_rng(0)


def record_cross_entropy(monkeypatch, module) -> list:
    """Make `module.cross_entropy` record (x, y) of every call; returns the record."""
    calls = []
    original = module.cross_entropy

    def recording(model, x, y, device):
        calls.append((x.clone(), y.clone()))
        return original(model, x, y, device)

    monkeypatch.setattr(module, "cross_entropy", recording)
    return calls
