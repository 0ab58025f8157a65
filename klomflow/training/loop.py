"""Training: one recipe shared by originals, oracles and subset models.

Data stays on the device as tensors; each epoch draws one permutation from
an explicit generator, so a model is fully determined by its seed, its
training indices and the recipe.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# The `train` section's dataclass lives with the other config sections (no torch there).
from klomflow.options import Recipe
from klomflow.versions import TRAINING as TRAINING_VERSION

# Bump klomflow/versions.py's TRAINING when a change here can change trained weights.
VERSION = TRAINING_VERSION


def pick_device() -> torch.device:
    """CUDA when present, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """Mixed precision (bfloat16) on CUDA; full float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(parameters, optimizer: str, lr: float, momentum=0.9, weight_decay=0.0,
                   nesterov=False, fused=None):
    """`fused=True` runs the whole update in one kernel (the same arithmetic, fewer passes)."""
    if optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov, fused=fused)
    if optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The rate at optimiser step `step`, stepped per iteration."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "triangular":
        # Linear from 0 up to lr at peak_epoch, then linear down to 0 at the end
        # (the KLOM paper's CIFAR-10 schedule).
        peak = recipe.peak_epoch * steps_per_epoch
        return float(np.interp(step, [0, peak, total], [0.0, recipe.lr, 0.0]))
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1 + np.cos(np.pi * step / total))
    raise ValueError(
        f"train.schedule must be constant, triangular or cosine, got {recipe.schedule!r}"
    )


def batches(n: int, batch_size: int, generator: torch.Generator, device):
    """Shuffled index batches [batch_size] over range(n), the last one possibly short."""
    order = torch.randperm(n, generator=generator).to(device)
    return order.split(batch_size)


@dataclass
class TrainingState:
    """What is needed to continue a model's training exactly where it stopped."""

    model: dict
    optimizer: dict
    generator: torch.Tensor
    epoch: int  # epochs completed
    history: list = field(default_factory=list)


def train_model(model: nn.Module, x, y, recipe: Recipe, generator: torch.Generator, device,
                log=print, label="model", resume: TrainingState | None = None,
                on_epoch_end=None) -> nn.Module:
    """Train `model` on x [n, ...], y [n] following `recipe`.

    `resume` continues a run from a TrainingState; `on_epoch_end(state)` is
    called after every epoch so that the caller can checkpoint it.
    """
    model.to(device)
    optimizer = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.momentum,
                               recipe.weight_decay, recipe.nesterov)
    steps_per_epoch = -(-len(y) // recipe.batch_size)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        generator.set_state(resume.generator)
        first_epoch = resume.epoch
        log(f"{label}: resuming from epoch checkpoint after epoch {first_epoch}")
    for epoch in range(first_epoch, recipe.epochs):
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for index, batch in enumerate(batches(len(y), recipe.batch_size, generator, device)):
            for group in optimizer.param_groups:
                step = epoch * steps_per_epoch + index
                group["lr"] = learning_rate(recipe, step, steps_per_epoch)
            with autocast(device):
                logits = model(x[batch])
                loss = F.cross_entropy(logits, y[batch], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            correct += (logits.argmax(1) == y[batch]).sum()
        log(f"{label}: epoch {epoch + 1}/{recipe.epochs} loss {loss_sum.item() / len(y):.4f} "
            f"train accuracy {correct.item() / len(y):.4f} ({time.perf_counter() - started:.2f}s)")
        if on_epoch_end is not None:
            on_epoch_end(TrainingState(model.state_dict(), optimizer.state_dict(),
                                       generator.get_state(), epoch + 1))
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x, device, batch_size: int = 1024) -> np.ndarray:
    """Logits [n_points, n_classes] as float32 numpy, in evaluation mode.

    Always in float32, also on CUDA where training runs in bfloat16: bfloat16's
    8-bit mantissa would round margins near 10 to steps of ~0.06, coarse next to
    KLOM's bins when margins spread narrowly. Inference is cheap next to training.
    """
    model.eval()
    outputs = []
    for start in range(0, len(x), batch_size):
        outputs.append(model(x[start:start + batch_size].to(device)).float())
    return torch.cat(outputs).cpu().numpy().astype(np.float32)


def accuracy(logits, labels) -> float:
    """Top-1 accuracy of logits [n, C] against labels [n]; NaN for no points."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(logits).argmax(-1) == labels).mean())
