"""The one interface every unlearning method implements.

A method is a function `unlearn(model, data, params) -> model` plus its
registry entry (klomflow/unlearning/methods/registry.py: defaults, version, flags). It
receives the original model (a private copy it may modify in place), the data
it may touch, and its resolved hyperparameters, and returns the unlearned
model. A method that predicts
outputs without producing weights (dm_direct) sets `outputs_logits` and
returns logits [n_points, n_classes] for `data.eval_x` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.nn import functional as F

from klomflow.training.loop import autocast
from klomflow.unlearning.methods.registry import REGISTRY, MethodSpec


@dataclass
class UnlearningData:
    """What an unlearning method may use; tensors live on `device`."""

    train_x: torch.Tensor  # [n_train, ...]
    train_y: torch.Tensor  # [n_train]
    forget_indices: torch.Tensor  # [n_forget] int64, into the training set
    retain_indices: torch.Tensor  # [n_retain] int64, the rest of the training set
    n_classes: int
    generator: torch.Generator  # CPU generator; the method's only source of randomness
    device: torch.device
    log: Callable[[str], None] = print
    # Inputs only some methods declare in `Method.needs`, e.g. held-out oracle
    # logits for oracle_matching or the forget set's datamodel rows for dmm.
    extras: dict = field(default_factory=dict)
    # All evaluation points [n_points, ...] (training points first, in index
    # order, then validation points), for methods that return logits; the
    # workflow fills it in, a caller may leave it None.
    eval_x: torch.Tensor | None = None

    @property
    def forget_x(self):
        return self.train_x[self.forget_indices]

    @property
    def forget_y(self):
        return self.train_y[self.forget_indices]

    @property
    def retain_x(self):
        return self.train_x[self.retain_indices]

    @property
    def retain_y(self):
        return self.train_y[self.retain_indices]


@dataclass(frozen=True, kw_only=True)
class Method(MethodSpec):
    """A method's registry entry (names, defaults, version, flags) and its update rule."""

    unlearn: Callable[[nn.Module, UnlearningData, dict], nn.Module]


def implement(name: str, unlearn) -> Method:
    """The Method of registry entry `name` with the update rule `unlearn`."""
    return implement_spec(REGISTRY[name], unlearn)


def implement_spec(spec: MethodSpec, unlearn) -> Method:
    """The Method of `spec` (a built-in's or a user method's) with the update rule `unlearn`."""
    return Method(**{entry.name: getattr(spec, entry.name) for entry in fields(spec)},
                  unlearn=unlearn)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device):
    """Index batches over range(n) in an order drawn from `generator`."""
    return torch.randperm(n, generator=generator).to(device).split(batch_size)


def cross_entropy(model, x, y, device):
    with autocast(device):
        return F.cross_entropy(model(x), y)


def sgd(model, params: dict):
    """SGD from a method's `lr`, `momentum` and `weight_decay` hyperparameters."""
    return torch.optim.SGD(model.parameters(), lr=params["lr"],
                           momentum=params.get("momentum", 0.0),
                           weight_decay=params.get("weight_decay", 0.0))


def cross_entropy_epoch(model, optimizer, data: UnlearningData, indices, batch_size: int,
                        sign: float = 1.0, step=None) -> None:
    """One pass over training `indices` in shuffled batches, minimising sign * CE.

    sign = -1 is gradient ascent. `step` replaces optimizer.step (e.g. a masked step).
    """
    step = step or optimizer.step
    for batch in shuffled_batches(len(indices), batch_size, data.generator, data.device):
        index = indices[batch]
        loss = sign * cross_entropy(model, data.train_x[index], data.train_y[index], data.device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step()


def random_labels(true_labels, n_classes: int, generator: torch.Generator, amnesiac: bool):
    """Labels [n] drawn uniformly; with `amnesiac`, uniformly among the other classes."""
    n = len(true_labels)
    if not amnesiac:
        return torch.randint(n_classes, (n,), generator=generator).to(true_labels.device)
    # A shift of 1..n_classes-1 modulo n_classes lands on each other class once.
    shift = torch.randint(1, n_classes, (n,), generator=generator).to(true_labels.device)
    return (true_labels + shift) % n_classes


def random_label_epoch(model, optimizer, data: UnlearningData, params: dict, step=None) -> None:
    """One pass over the forget set with random labels, then one over the retain set
    (random_label; salun runs it with a masked step).

    Uses params `amnesiac`, `forget_batch_size` and `batch_size`. `step()`, when given,
    replaces `optimizer.step()` after each backward pass.
    """
    step = step or optimizer.step
    labels = random_labels(data.forget_y, data.n_classes, data.generator, params["amnesiac"])
    for batch in shuffled_batches(len(data.forget_indices), params["forget_batch_size"],
                                  data.generator, data.device):
        loss = cross_entropy(model, data.train_x[data.forget_indices[batch]], labels[batch],
                             data.device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step()
    cross_entropy_epoch(model, optimizer, data, data.retain_indices, params["batch_size"],
                        step=step)
