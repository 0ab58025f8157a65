"""oracle_matching (OM; Georgiev et al. 2024, "Attribute-to-Delete: Machine
Unlearning via Datamodel Matching", arXiv 2410.23232).

Fine-tune the original model so that its logits match the mean logits of k
oracles (models retrained without F) by mean squared error:
    loss = mean over batch and classes of (f(x) - mean_k oracle_k(x))^2
on F (repeated `forget_mult` times) plus a random retain subset of
retain_mult * |F| points; Adam, learning rate times `lr_decay` after every
epoch. Data: forget set, a sample of the retain set, oracles' logits.

OM uses oracles, so it is an upper-bound diagnostic, not a competitor
(`diagnostic=True`). The workflow passes only the held-out oracles'
logits (`holdout_oracle_logits`: oracles of other seeds than the ones KLOM
scores against, [n_holdout_oracles, n_points, n_classes], training points
first), and OM uses the first `n_oracles` of them; it must never be given
the scored oracles, or it would be matched to its own reference.

Differences from the authors' code, and why:
- Targets are the oracles' logits precomputed in evaluation mode, not the
  oracle networks run on each batch; for networks without batch statistics
  (or oracles in eval mode, as the authors set them) they are the same.
- The retain subset is drawn from `data.generator`, so each original model
  gets its own subset, and the fine-tuning set is reshuffled every epoch;
  the authors use one fixed-seed subset and an unshuffled loader.
- A fractional `forget_mult` repeats F int(forget_mult) times plus its first
  fraction of points, as the authors do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from klomflow.methods.base import Method, shuffled_batches
from klomflow.training import autocast


def finetuning_indices(data, params) -> torch.Tensor:
    """Training indices to fine-tune on: F forget_mult times, then a random retain sample."""
    forget = data.forget_indices.cpu()
    whole = int(params["forget_mult"])
    part = int(round((params["forget_mult"] - whole) * len(forget)))
    repeated = torch.cat([forget.repeat(whole), forget[:part]])
    n_retain = min(int(round(params["retain_mult"] * len(forget))), len(data.retain_indices))
    chosen = torch.randperm(len(data.retain_indices), generator=data.generator)[:n_retain]
    return torch.cat([repeated, data.retain_indices.cpu()[chosen]])


def match_logits(model, data, indices: torch.Tensor, targets, params):
    """Fine-tune `model` so its logits on train_x[indices] approach targets [n, C] (MSE).

    Adam with `lr`, multiplied by `lr_decay` after each of `epochs` epochs;
    batches of `batch_size` reshuffled every epoch from data.generator.
    """
    if len(indices) == 0:
        return model
    x = data.train_x[indices.to(data.device)]
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=data.device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    for _ in range(params["epochs"]):
        for batch in shuffled_batches(len(indices), params["batch_size"], data.generator,
                                      data.device):
            with autocast(data.device):
                logits = model(x[batch])
            loss = F.mse_loss(logits.float(), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] *= params["lr_decay"]
    return model


def unlearn(model, data, params):
    oracle_logits = data.extras["holdout_oracle_logits"]  # [n_holdout, n_points, n_classes]
    k = params["n_oracles"]
    if len(oracle_logits) < k:
        raise ValueError(
            f"oracle_matching: n_oracles={k} but only {len(oracle_logits)} held-out oracles; "
            f"raise models.n_holdout_oracles or lower n_oracles"
        )
    if oracle_logits.shape[1] < len(data.train_y):
        raise ValueError("oracle_matching: oracle logits cover fewer points than the training set")
    indices = finetuning_indices(data, params)
    # Training index i is evaluation point i (training points come first).
    targets = np.asarray(oracle_logits[:k], dtype=np.float32)[:, indices.numpy()].mean(axis=0)
    return match_logits(model, data, indices, targets, params)


# The recipe of the paper (KLOM.md), shared with dmm.
MATCHING_DEFAULTS = {"forget_mult": 1.0, "retain_mult": 3.0, "lr": 5e-4, "lr_decay": 0.95,
                     "epochs": 5, "batch_size": 512}

METHOD = Method(
    name="oracle_matching",
    unlearn=unlearn,
    defaults={"n_oracles": 10, **MATCHING_DEFAULTS},
    needs=("holdout_oracle_logits",),
    diagnostic=True,
)
