"""Fine-tuning towards target logits, shared by oracle_matching and dmm, and the check of
the datamodel rows that dmm and dm_direct read (Georgiev et al. 2024, "Attribute-to-Delete:
Machine Unlearning via Datamodel Matching", arXiv 2410.23232; the recipe in docs/methods.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from klomflow.training.loop import autocast
from klomflow.unlearning.methods.base import shuffled_batches


def finetuning_indices(data, params) -> torch.Tensor:
    """Training indices to fine-tune on: F forget_mult times, then a random retain sample.

    A fractional forget_mult repeats F int(forget_mult) times plus its first fraction of
    points, as the authors do; the retain sample (retain_mult * |F| points) is drawn from
    data.generator.
    """
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
        for batch in shuffled_batches(
            len(indices), params["batch_size"], data.generator, data.device
        ):
            with autocast(data.device):
                logits = model(x[batch])
            loss = F.mse_loss(logits.float(), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] *= params["lr_decay"]
    return model


def check_datamodel_rows(rows, data, n_points=None) -> None:
    """Refuse datamodel rows whose shape is not [|F|, n_points, n_classes] of `data`
    (results/datamodels/rows/{forget_set}.npy: row k is beta[forget_indices[k]])."""
    n_forget = len(data.forget_indices)
    if rows.ndim != 3 or rows.shape[0] != n_forget or rows.shape[2] != data.n_classes:
        raise ValueError(
            f"datamodel rows have shape {rows.shape}; expected [|F|={n_forget}, "
            f"n_points, n_classes={data.n_classes}]"
        )
    if n_points is not None and rows.shape[1] != n_points:
        raise ValueError(f"datamodel rows cover {rows.shape[1]} points; the data has {n_points}")
