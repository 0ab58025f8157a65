"""Twins of the logit-matching methods: oracle_matching and dmm (Adam on the MSE to each
model's own target logits).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from klomflow.training.ensemble import Ensemble
from klomflow.training.loop import autocast
from klomflow.unlearning.methods import dmm as dmm_method
from klomflow.unlearning.methods import oracle_matching as oracle_matching_method
from klomflow.unlearning.twins.common import epoch_batches, finish, optimizer_step, twin


def _match_logits(models, datas, indices, targets, params):
    """methods.matching.match_logits for every model: model m towards targets[m] [n, C]
    on training rows indices[m] [n] (Adam, lr times lr_decay after each epoch)."""
    n = len(indices[0])
    if any(len(index) != n for index in indices):
        raise ValueError("ensemble matching: every model needs as many fine-tuning points")
    if n == 0:
        return models  # match_logits leaves a model unchanged without points
    device = datas[0].device
    rows = torch.stack([torch.as_tensor(index) for index in indices]).to(device)  # [M, n]
    targets = torch.stack([torch.as_tensor(np.asarray(target), dtype=torch.float32)
                           for target in targets]).to(device)  # [M, n, C]
    member = torch.arange(len(models), device=device)[:, None]
    ensemble = Ensemble(models).to(device)
    ensemble.train()
    # torch.optim.Adam(model.parameters(), lr=...) as match_logits builds it (default betas,
    # eps, no weight decay), fused: one pass over the stacked weights per step.
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=params["lr"], fused=True)
    for _ in range(params["epochs"]):
        for batch in epoch_batches(datas, n, params["batch_size"]):
            with autocast(device):
                logits = ensemble(datas[0].train_x[rows.gather(1, batch)])  # [M, C, batch]
            # F.mse_loss's mean over batch and classes, per model; targets [M, batch, C].
            losses = F.mse_loss(logits.float(), targets[member, batch].transpose(1, 2),
                                reduction="none").mean((1, 2))
            optimizer_step(optimizer, losses)
        for group in optimizer.param_groups:
            group["lr"] *= params["lr_decay"]
    return finish(models, ensemble)


@twin
def oracle_matching(models, datas, params):
    """methods.oracle_matching: each model's oracle subset and retain sample, then matching."""
    prepared = [oracle_matching_method.matching_targets(data, params) for data in datas]
    return _match_logits(models, datas, *zip(*prepared), params)


@twin
def dmm(models, datas, params):
    """methods.dmm: each model's retain sample and targets (from its original logits, before
    any fine-tuning), then matching."""
    prepared = [dmm_method.matching_targets(model, data, params)
                for model, data in zip(models, datas)]
    return _match_logits(models, datas, *zip(*prepared), params)


