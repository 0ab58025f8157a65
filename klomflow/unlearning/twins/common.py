"""What every twin shares: the check that a job's models are alike, the optimiser step over
the stacked weights, each epoch's per-model batches, cross-entropy epochs.
"""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from klomflow.training.ensemble import Ensemble
from klomflow.training.loop import autocast
from klomflow.unlearning.methods.base import shuffled_batches


def require_alike(models, datas) -> None:
    """What every twin takes from model 0's data alone must be every model's.

    The twins index one training set (`datas[0].train_x`, `train_y`, on
    `datas[0].device`) with each model's own rows, and every model takes the same
    steps, so each needs as many forget and as many retain points as model 0: with
    more, it would silently train on a subsample; with fewer, fail on an index.
    """
    if len(models) != len(datas):
        raise ValueError(f"ensemble unlearning: {len(models)} models but {len(datas)} "
                         "UnlearningData")
    first = datas[0]
    for member, data in enumerate(datas[1:], start=1):
        for name in ("train_x", "train_y"):
            mine, model_0s = getattr(data, name), getattr(first, name)
            if mine is not model_0s and not (mine.shape == model_0s.shape
                                             and mine.device == model_0s.device
                                             and torch.equal(mine, model_0s)):
                raise ValueError(f"ensemble unlearning: model {member}'s {name} is not model "
                                 f"0's; an ensemble unlearns on one training set")
        for name in ("device", "n_classes"):
            if getattr(data, name) != getattr(first, name):
                raise ValueError(f"ensemble unlearning: model {member}'s {name} "
                                 f"{getattr(data, name)} is not model 0's "
                                 f"({getattr(first, name)})")
        for split in ("forget", "retain"):
            mine, model_0s = (len(getattr(d, f"{split}_indices")) for d in (data, first))
            if mine != model_0s:
                raise ValueError(
                    f"ensemble unlearning: model {member} has {mine} {split} points, model 0 "
                    f"has {model_0s}; the models of an ensemble take the same steps and need "
                    "as many (set train.ensemble: false to unlearn one model at a time)")


def twin(function):
    """A twin that first checks its models' data with `require_alike`."""

    @functools.wraps(function)
    def checked(models, datas, params):
        require_alike(models, datas)
        return function(models, datas, params)

    return checked


def sgd(ensemble, params):
    """methods.base.sgd over the stacked weights (fused: one pass per step)."""
    return torch.optim.SGD(ensemble.parameters(), lr=params["lr"],
                           momentum=params.get("momentum", 0.0),
                           weight_decay=params.get("weight_decay", 0.0), fused=True)


def cross_entropies(ensemble, data, rows, labels=None):
    """Per model, methods.base.cross_entropy on its batch: rows [M, batch] -> [M].

    `labels` [M, batch] replace the rows' training labels (random_label's forget pass).
    """
    labels = data.train_y[rows] if labels is None else labels
    with autocast(data.device):
        logits = ensemble(data.train_x[rows])  # [M, classes, batch]
        return F.cross_entropy(logits, labels, reduction="none").mean(1)


def epoch_batches(datas, n: int, batch_size: int) -> list:
    """One epoch's batches, each [M, batch] positions in range(n): model m's own
    methods.base.shuffled_batches, drawn now from its generator, as the method draws it."""
    per_model = [shuffled_batches(n, batch_size, data.generator, data.device) for data in datas]
    return [torch.stack(batches) for batches in zip(*per_model)]


def training_rows(datas, positions, index_of):
    """Positions [M, batch] into each model's `index_of(data)` as training-set rows [M, batch]."""
    return torch.stack([index_of(data)[batch] for data, batch in zip(datas, positions)])


def optimizer_step(optimizer, losses, step=None):
    """One update on the models' summed losses; `step()`, when given, replaces
    optimizer.step() (salun's masked step)."""
    optimizer.zero_grad(set_to_none=True)
    # Each model's weights reach only its own loss: the sum's gradient is per model.
    losses.sum().backward()
    (step or optimizer.step)()


def finish(models, ensemble):
    for model, state in zip(models, ensemble.unstack()):
        model.load_state_dict(state)
    return models


def cross_entropy_epoch(ensemble, optimizer, datas, index_of, batch_size, sign=1.0,
                         step=None):
    """methods.base.cross_entropy_epoch for every model: one shuffled pass over its indices."""
    for positions in epoch_batches(datas, len(index_of(datas[0])), batch_size):
        rows = training_rows(datas, positions, index_of)
        optimizer_step(optimizer, sign * cross_entropies(ensemble, datas[0], rows), step)


def cross_entropy_epochs(models, datas, params, index_of, sign):
    """methods.base.cross_entropy_epoch, `params["epochs"]` times, for every model."""
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = sgd(ensemble, params)
    for _ in range(params["epochs"]):
        cross_entropy_epoch(ensemble, optimizer, datas, index_of, params["batch_size"], sign)
    return finish(models, ensemble)


