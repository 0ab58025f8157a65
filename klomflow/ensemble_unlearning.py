"""Unlearning a shard's models as one ensemble, for methods that are plain SGD on a loss.

Each function here is the ensemble twin of one method's `unlearn` in
klomflow/methods/: the same loss, the same SGD hyperparameters, the same
batches drawn in the same order from each model's own `data.generator`,
applied to M models at once through `klomflow.ensemble.Ensemble` (one
optimiser over the stacked weights is M per-model optimisers: SGD acts
elementwise). Only float summation order differs from running the method
once per model; tests/test_ensemble_unlearning.py checks the two agree.

`TOGETHER` maps a method name to (the method version its twin follows, the
twin). A method whose `version` moved on runs one model at a time again until
its twin here is updated: a changed update rule never runs in two versions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from klomflow.ensemble import Ensemble
from klomflow.methods.base import shuffled_batches
from klomflow.methods.neggrad_plus import forget_batches_forever
from klomflow.training import autocast


def _sgd(ensemble, params):
    """methods.base.sgd over the stacked weights (fused: one pass per step)."""
    return torch.optim.SGD(ensemble.parameters(), lr=params["lr"],
                           momentum=params.get("momentum", 0.0),
                           weight_decay=params.get("weight_decay", 0.0), fused=True)


def _cross_entropies(ensemble, data, rows):
    """Per model, methods.base.cross_entropy on its batch: rows [M, batch] -> [M]."""
    with autocast(data.device):
        logits = ensemble(data.train_x[rows])  # [M, classes, batch]
        return F.cross_entropy(logits, data.train_y[rows], reduction="none").mean(1)


def _stack_batches(datas, iterators, index_of):
    """One batch per model, as training-set rows [M, batch]."""
    return torch.stack([index_of(data)[next(iterator)] for data, iterator in zip(datas, iterators)])


def _step(optimizer, losses):
    optimizer.zero_grad(set_to_none=True)
    # Each model's weights reach only its own loss: the sum's gradient is per model.
    losses.sum().backward()
    optimizer.step()


def _finish(models, ensemble):
    for model, state in zip(models, ensemble.unstack()):
        model.load_state_dict(state)
    return models


def _cross_entropy_epochs(models, datas, params, index_of, sign):
    """methods.base.cross_entropy_epoch, `params["epochs"]` times, for every model."""
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = _sgd(ensemble, params)
    for _ in range(params["epochs"]):
        iterators = [iter(shuffled_batches(len(index_of(data)), params["batch_size"],
                                           data.generator, data.device)) for data in datas]
        for _ in range(-(-len(index_of(datas[0])) // params["batch_size"])):
            rows = _stack_batches(datas, iterators, index_of)
            _step(optimizer, sign * _cross_entropies(ensemble, datas[0], rows))
    return _finish(models, ensemble)


def gradient_ascent(models, datas, params):
    return _cross_entropy_epochs(models, datas, params, lambda data: data.forget_indices, -1.0)


def gradient_descent(models, datas, params):
    return _cross_entropy_epochs(models, datas, params, lambda data: data.retain_indices, 1.0)


def neggrad_plus(models, datas, params):
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = _sgd(ensemble, params)
    beta = params["beta"]
    forget_cycles = [forget_batches_forever(data, params["forget_batch_size"]) for data in datas]
    for _ in range(params["epochs"]):
        # Drawn in the method's order: each epoch's retain permutation first, then
        # forget permutations as its cycle runs out (zip asks the retain side first).
        retain_iterators = [iter(shuffled_batches(len(data.retain_indices), params["batch_size"],
                                                  data.generator, data.device))
                            for data in datas]
        for _ in range(-(-len(datas[0].retain_indices) // params["batch_size"])):
            retain = _stack_batches(datas, retain_iterators, lambda data: data.retain_indices)
            forget = _stack_batches(datas, forget_cycles, lambda data: data.forget_indices)
            losses = (beta * _cross_entropies(ensemble, datas[0], retain)
                      - (1 - beta) * _cross_entropies(ensemble, datas[0], forget))
            _step(optimizer, losses)
    return _finish(models, ensemble)


TOGETHER = {
    "gradient_ascent": ("1", gradient_ascent),
    "gradient_descent": ("1", gradient_descent),
    "neggrad_plus": ("1", neggrad_plus),
}


def together(method):
    """The ensemble twin of `method`, or None if it has none for its current version."""
    version, function = TOGETHER.get(method.name, (None, None))
    return function if version == method.version else None
