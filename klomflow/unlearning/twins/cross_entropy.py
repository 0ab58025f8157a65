"""Twins of the methods that are SGD on cross-entropies: gradient_ascent, gradient_descent,
neggrad_plus, random_label, and salun (random_label's epochs with its masked step).
"""

from __future__ import annotations

import torch

from klomflow.training.ensemble import Ensemble
from klomflow.unlearning.methods import salun as salun_method
from klomflow.unlearning.methods.base import random_labels
from klomflow.unlearning.methods.neggrad_plus import forget_batches_forever
from klomflow.unlearning.twins.common import (
    cross_entropies,
    cross_entropy_epoch,
    cross_entropy_epochs,
    epoch_batches,
    finish,
    optimizer_step,
    sgd,
    training_rows,
    twin,
)


@twin
def gradient_ascent(models, datas, params):
    return cross_entropy_epochs(models, datas, params, lambda data: data.forget_indices, -1.0)


@twin
def gradient_descent(models, datas, params):
    return cross_entropy_epochs(models, datas, params, lambda data: data.retain_indices, 1.0)


@twin
def neggrad_plus(models, datas, params):
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = sgd(ensemble, params)
    beta = params["beta"]
    forget_cycles = [forget_batches_forever(data, params["forget_batch_size"]) for data in datas]
    for _ in range(params["epochs"]):
        # Drawn in the method's order: each epoch's retain permutation first, then
        # forget permutations as its cycle runs out (zip asks the retain side first).
        for positions in epoch_batches(datas, len(datas[0].retain_indices), params["batch_size"]):
            retain = training_rows(datas, positions, lambda data: data.retain_indices)
            forget = training_rows(datas, [next(cycle) for cycle in forget_cycles],
                                    lambda data: data.forget_indices)
            losses = (beta * cross_entropies(ensemble, datas[0], retain)
                      - (1 - beta) * cross_entropies(ensemble, datas[0], forget))
            optimizer_step(optimizer, losses)
    return finish(models, ensemble)


def _random_label_epoch(ensemble, optimizer, datas, params, step=None):
    """methods.base.random_label_epoch for every model (`step` as there)."""
    forget_batch_size = params["forget_batch_size"]
    # Each model's draws in random_label_epoch's order: its forget set's random
    # labels, then its forget shuffle, then (in cross_entropy_epoch) its retain shuffle.
    labels = [random_labels(data.forget_y, data.n_classes, data.generator, params["amnesiac"])
              for data in datas]  # per model [n_forget]
    for positions in epoch_batches(datas, len(datas[0].forget_indices), forget_batch_size):
        rows = training_rows(datas, positions, lambda data: data.forget_indices)
        targets = torch.stack([label[batch] for label, batch in zip(labels, positions)])
        optimizer_step(optimizer, cross_entropies(ensemble, datas[0], rows, targets), step)
    cross_entropy_epoch(ensemble, optimizer, datas, lambda data: data.retain_indices,
                         params["batch_size"], step=step)


@twin
def random_label(models, datas, params):
    """methods.random_label: per epoch, methods.base.random_label_epoch for every model."""
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = sgd(ensemble, params)
    for _ in range(params["epochs"]):
        _random_label_epoch(ensemble, optimizer, datas, params)
    return finish(models, ensemble)


@twin
def salun(models, datas, params):
    """methods.salun: each model's saliency mask at its original weights (the method's own
    forget_gradient and saliency_mask, one model at a time), then random-label epochs
    with salun.masked_step over the stacked weights."""
    masks = [salun_method.saliency_mask(
        salun_method.forget_gradient(model, data, params["forget_batch_size"]),
        params["mask_ratio"]) for model, data in zip(models, datas)]
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    stacked_masks = ensemble.stack_like_parameters(masks)
    # [(parameter, its mask, its original values)] in the ensemble's layout.
    masked = [(parameter, stacked_masks[name], parameter.detach().clone())
              for name, parameter in ensemble.named_parameters() if name in stacked_masks]
    weight_decay = params["weight_decay"]
    # As the method: decay goes through the gradient in the masked step, not the optimiser.
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=params["lr"],
                                momentum=params["momentum"], fused=True)

    def masked_step():
        # salun.masked_step, elementwise, so the same on stacked weights.
        with torch.no_grad():
            for parameter, mask, _ in masked:
                if parameter.grad is None:
                    continue
                if weight_decay:
                    parameter.grad.add_(parameter, alpha=weight_decay)
                parameter.grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            for parameter, mask, original in masked:
                parameter.copy_(torch.where(mask, parameter, original))

    for _ in range(params["epochs"]):
        _random_label_epoch(ensemble, optimizer, datas, params, masked_step)
    return finish(models, ensemble)


