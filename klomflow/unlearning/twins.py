"""Unlearning a shard's models as one ensemble, for methods that are plain SGD or Adam on a loss.

Each function here is the ensemble twin of one method's `unlearn` in
klomflow/unlearning/methods/: the same loss, the same optimiser and hyperparameters, the
same random draws (labels, subsets, batches) made in the same order from each
model's own `data.generator`, applied to M models at once through
`klomflow.training.ensemble.Ensemble`. The loss is the sum of the M per-model losses,
so each model's gradient is its own; one optimiser over the stacked weights
is M per-model optimisers, since SGD (momentum, weight decay) and Adam act
elementwise, and a learning-rate decay multiplies every model's rate alike.
Only float summation order differs from running the method once per model;
tests/test_ensemble_unlearning.py checks the two agree.

Twins: gradient_ascent, gradient_descent, neggrad_plus and random_label
(SGD on cross-entropies), salun (random_label's epochs with salun's masked
step: each model's own saliency mask, from the method's `forget_gradient`
and `saliency_mask` at its original weights, laid out as the stacked
weights), scrub (SGD on per-model distillation KLs against the frozen
originals, an ensemble in evaluation mode, with the method's learning-rate
schedule), bad_teaching (Adam on per-model KLs to targets mixed from the
frozen originals and each model's own incompetent teacher, the method's
`incompetent_teacher`), oracle_matching and dmm (Adam on the MSE to each
model's own target logits, klomflow.unlearning.methods.matching.match_logits; the
targets are prepared per model by the method's own `matching_targets`).
scrub's and bad_teaching's losses are float32 over rows of classes
[M, batch, C], as the methods compute them on one model's [batch, C], so
their float32 rounding is the same.

Every twin runs its models on one training set (model 0's, on its device) and
takes every model through the same number of steps, so it refuses models whose
data differ in training set, device or forget and retain sizes
(`_require_alike`) rather than subsample them silently.

`TOGETHER` maps a method name to (the method version its twin follows, the
twin). A method whose `version` moved on runs one model at a time again until
its twin here is updated: a changed update rule never runs in two versions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F

from klomflow.training.ensemble import Ensemble
from klomflow.training.loop import autocast
from klomflow.unlearning.methods import bad_teaching as bad_teaching_method
from klomflow.unlearning.methods import dmm as dmm_method
from klomflow.unlearning.methods import oracle_matching as oracle_matching_method
from klomflow.unlearning.methods import salun as salun_method
from klomflow.unlearning.methods import scrub as scrub_method
from klomflow.unlearning.methods.base import random_labels, shuffled_batches
from klomflow.unlearning.methods.neggrad_plus import forget_batches_forever


def _require_alike(models, datas) -> None:
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


def _twin(function):
    """A twin that first checks its models' data with `_require_alike`."""

    @functools.wraps(function)
    def checked(models, datas, params):
        _require_alike(models, datas)
        return function(models, datas, params)

    return checked


def _sgd(ensemble, params):
    """methods.base.sgd over the stacked weights (fused: one pass per step)."""
    return torch.optim.SGD(ensemble.parameters(), lr=params["lr"],
                           momentum=params.get("momentum", 0.0),
                           weight_decay=params.get("weight_decay", 0.0), fused=True)


def _cross_entropies(ensemble, data, rows, labels=None):
    """Per model, methods.base.cross_entropy on its batch: rows [M, batch] -> [M].

    `labels` [M, batch] replace the rows' training labels (random_label's forget pass).
    """
    labels = data.train_y[rows] if labels is None else labels
    with autocast(data.device):
        logits = ensemble(data.train_x[rows])  # [M, classes, batch]
        return F.cross_entropy(logits, labels, reduction="none").mean(1)


def _epoch_batches(datas, n: int, batch_size: int) -> list:
    """One epoch's batches, each [M, batch] positions in range(n): model m's own
    methods.base.shuffled_batches, drawn now from its generator, as the method draws it."""
    per_model = [shuffled_batches(n, batch_size, data.generator, data.device) for data in datas]
    return [torch.stack(batches) for batches in zip(*per_model)]


def _training_rows(datas, positions, index_of):
    """Positions [M, batch] into each model's `index_of(data)` as training-set rows [M, batch]."""
    return torch.stack([index_of(data)[batch] for data, batch in zip(datas, positions)])


def _step(optimizer, losses, step=None):
    """One update on the models' summed losses; `step()`, when given, replaces
    optimizer.step() (salun's masked step)."""
    optimizer.zero_grad(set_to_none=True)
    # Each model's weights reach only its own loss: the sum's gradient is per model.
    losses.sum().backward()
    (step or optimizer.step)()


def _finish(models, ensemble):
    for model, state in zip(models, ensemble.unstack()):
        model.load_state_dict(state)
    return models


def _cross_entropy_epoch(ensemble, optimizer, datas, index_of, batch_size, sign=1.0,
                         step=None):
    """methods.base.cross_entropy_epoch for every model: one shuffled pass over its indices."""
    for positions in _epoch_batches(datas, len(index_of(datas[0])), batch_size):
        rows = _training_rows(datas, positions, index_of)
        _step(optimizer, sign * _cross_entropies(ensemble, datas[0], rows), step)


def _cross_entropy_epochs(models, datas, params, index_of, sign):
    """methods.base.cross_entropy_epoch, `params["epochs"]` times, for every model."""
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = _sgd(ensemble, params)
    for _ in range(params["epochs"]):
        _cross_entropy_epoch(ensemble, optimizer, datas, index_of, params["batch_size"], sign)
    return _finish(models, ensemble)


@_twin
def gradient_ascent(models, datas, params):
    return _cross_entropy_epochs(models, datas, params, lambda data: data.forget_indices, -1.0)


@_twin
def gradient_descent(models, datas, params):
    return _cross_entropy_epochs(models, datas, params, lambda data: data.retain_indices, 1.0)


@_twin
def neggrad_plus(models, datas, params):
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = _sgd(ensemble, params)
    beta = params["beta"]
    forget_cycles = [forget_batches_forever(data, params["forget_batch_size"]) for data in datas]
    for _ in range(params["epochs"]):
        # Drawn in the method's order: each epoch's retain permutation first, then
        # forget permutations as its cycle runs out (zip asks the retain side first).
        for positions in _epoch_batches(datas, len(datas[0].retain_indices), params["batch_size"]):
            retain = _training_rows(datas, positions, lambda data: data.retain_indices)
            forget = _training_rows(datas, [next(cycle) for cycle in forget_cycles],
                                    lambda data: data.forget_indices)
            losses = (beta * _cross_entropies(ensemble, datas[0], retain)
                      - (1 - beta) * _cross_entropies(ensemble, datas[0], forget))
            _step(optimizer, losses)
    return _finish(models, ensemble)


def _random_label_epoch(ensemble, optimizer, datas, params, step=None):
    """methods.base.random_label_epoch for every model (`step` as there)."""
    forget_batch_size = params["forget_batch_size"]
    # Each model's draws in random_label_epoch's order: its forget set's random
    # labels, then its forget shuffle, then (in _cross_entropy_epoch) its retain shuffle.
    labels = [random_labels(data.forget_y, data.n_classes, data.generator, params["amnesiac"])
              for data in datas]  # per model [n_forget]
    for positions in _epoch_batches(datas, len(datas[0].forget_indices), forget_batch_size):
        rows = _training_rows(datas, positions, lambda data: data.forget_indices)
        targets = torch.stack([label[batch] for label, batch in zip(labels, positions)])
        _step(optimizer, _cross_entropies(ensemble, datas[0], rows, targets), step)
    _cross_entropy_epoch(ensemble, optimizer, datas, lambda data: data.retain_indices,
                         params["batch_size"], step=step)


@_twin
def random_label(models, datas, params):
    """methods.random_label: per epoch, methods.base.random_label_epoch for every model."""
    ensemble = Ensemble(models).to(datas[0].device)
    ensemble.train()
    optimizer = _sgd(ensemble, params)
    for _ in range(params["epochs"]):
        _random_label_epoch(ensemble, optimizer, datas, params)
    return _finish(models, ensemble)


@_twin
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
    return _finish(models, ensemble)


def _frozen(models, device):
    """The ensemble of `models` in evaluation mode, out of any optimiser's reach (a teacher)."""
    teacher = Ensemble(models).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _rows(logits):
    """Logits [M, C, batch] as float32 rows [M, batch, C]: the methods' float32 losses over
    contiguous rows of classes, as on one model's [batch, C], round alike."""
    return logits.float().transpose(1, 2).contiguous()


def _distillation_kls(student_logits, teacher_logits, temperature):
    """Per model, scrub.distillation_kl: logits [M, C, batch] -> [M] (KL summed over points
    and classes, over the batch size: `batchmean`), times T^2."""
    student = F.log_softmax(_rows(student_logits) / temperature, dim=2)
    teacher = F.log_softmax(_rows(teacher_logits) / temperature, dim=2)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True)
    return kl.sum((1, 2)) / student_logits.shape[2] * temperature ** 2


@_twin
def scrub(models, datas, params):
    """methods.scrub: students from the originals against the frozen originals (teachers,
    evaluation mode); per epoch its learning rate, max-steps on the forget set in the first
    `msteps` epochs, then min-steps on the retain set."""
    device = datas[0].device
    teacher = _frozen(models, device)
    student = Ensemble(models).to(device)
    student.train()
    optimizer = _sgd(student, params)
    temperature = params["temperature"]

    def divergences(rows):
        x = datas[0].train_x[rows]
        with torch.no_grad(), autocast(device):
            teacher_logits = teacher(x)
        with autocast(device):
            student_logits = student(x)
        return _distillation_kls(student_logits, teacher_logits, temperature), student_logits

    for epoch in range(params["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = scrub_method.epoch_learning_rate(epoch, params)
        # Each model's draws in the method's order: its forget shuffle (max-step
        # epochs only), then its retain shuffle.
        if epoch < params["msteps"]:
            for positions in _epoch_batches(datas, len(datas[0].forget_indices),
                                            params["forget_batch_size"]):
                rows = _training_rows(datas, positions, lambda data: data.forget_indices)
                _step(optimizer, -divergences(rows)[0])
        for positions in _epoch_batches(datas, len(datas[0].retain_indices), params["batch_size"]):
            rows = _training_rows(datas, positions, lambda data: data.retain_indices)
            divergence, logits = divergences(rows)
            # F.cross_entropy(logits.float(), labels) per model, on rows of classes.
            cross_entropies = F.cross_entropy(_rows(logits).flatten(0, 1),
                                              datas[0].train_y[rows].flatten(),
                                              reduction="none").view(rows.shape).mean(1)
            _step(optimizer, params["gamma"] * cross_entropies + params["alpha"] * divergence)
    return _finish(models, student)


@_twin
def bad_teaching(models, datas, params):
    """methods.bad_teaching: each model's incompetent teacher (the method's own, from its
    generator), its retain sample, then Adam on the KL to the mixed teachers' targets."""
    device = datas[0].device
    # Each model's draws in the method's order: its incompetent teacher's seed, its retain
    # sample, then each epoch's shuffle.
    incompetent = _frozen([bad_teaching_method.incompetent_teacher(model, data.generator)
                           for model, data in zip(models, datas)], device)
    competent = _frozen(models, device)
    indices = []
    for data in datas:
        n_retain = len(data.retain_indices)
        n_retain_used = round(params["retain_fraction"] * n_retain)
        retain_used = data.retain_indices[
            torch.randperm(n_retain, generator=data.generator)[:n_retain_used].to(device)]
        indices.append(torch.cat([data.forget_indices, retain_used]))
    n = len(indices[0])
    if any(len(index) != n for index in indices):
        raise ValueError("ensemble bad_teaching: every model needs as many points")
    indices = torch.stack(indices)  # [M, n] training-set rows, forget set first
    is_forget = torch.stack([torch.arange(n, device=device) < len(data.forget_indices)
                             for data in datas])  # [M, n]
    temperature = params["temperature"]
    student = Ensemble(models).to(device)
    student.train()
    # torch.optim.Adam(student.parameters(), lr=...) as the method builds it, fused.
    optimizer = torch.optim.Adam(student.parameters(), lr=params["lr"], fused=True)
    for _ in range(params["epochs"]):
        for batch in _epoch_batches(datas, n, params["batch_size"]):
            x = datas[0].train_x[indices.gather(1, batch)]
            # bad_teaching.teacher_targets per model, on rows of classes [M, batch, C].
            with torch.no_grad(), autocast(device):
                good = F.softmax(_rows(competent(x)) / temperature, dim=2)
                bad = F.softmax(_rows(incompetent(x)) / temperature, dim=2)
            target = torch.where(is_forget.gather(1, batch)[:, :, None], bad, good)
            with autocast(device):
                student_logits = student(x)
            # F.kl_div(..., reduction="batchmean") per model.
            kl = F.kl_div(F.log_softmax(_rows(student_logits) / temperature, dim=2), target,
                          reduction="none")
            _step(optimizer, kl.sum((1, 2)) / batch.shape[1])
    return _finish(models, student)


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
        for batch in _epoch_batches(datas, n, params["batch_size"]):
            with autocast(device):
                logits = ensemble(datas[0].train_x[rows.gather(1, batch)])  # [M, C, batch]
            # F.mse_loss's mean over batch and classes, per model; targets [M, batch, C].
            losses = F.mse_loss(logits.float(), targets[member, batch].transpose(1, 2),
                                reduction="none").mean((1, 2))
            _step(optimizer, losses)
        for group in optimizer.param_groups:
            group["lr"] *= params["lr_decay"]
    return _finish(models, ensemble)


@_twin
def oracle_matching(models, datas, params):
    """methods.oracle_matching: each model's oracle subset and retain sample, then matching."""
    prepared = [oracle_matching_method.matching_targets(data, params) for data in datas]
    return _match_logits(models, datas, *zip(*prepared), params)


@_twin
def dmm(models, datas, params):
    """methods.dmm: each model's retain sample and targets (from its original logits, before
    any fine-tuning), then matching."""
    prepared = [dmm_method.matching_targets(model, data, params)
                for model, data in zip(models, datas)]
    return _match_logits(models, datas, *zip(*prepared), params)


TOGETHER = {
    "bad_teaching": ("1", bad_teaching),
    "gradient_ascent": ("1", gradient_ascent),
    "gradient_descent": ("1", gradient_descent),
    "neggrad_plus": ("1", neggrad_plus),
    "random_label": ("1", random_label),
    "salun": ("1", salun),
    "scrub": ("2", scrub),
    "oracle_matching": ("2", oracle_matching),
    "dmm": ("1", dmm),
}


def together(method):
    """The ensemble twin of `method`, or None if it has none for its current version."""
    version, function = TOGETHER.get(method.name, (None, None))
    return function if version == method.version else None
