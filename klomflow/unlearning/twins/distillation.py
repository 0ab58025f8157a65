"""Twins of the distillation methods: scrub and bad_teaching, with frozen teachers as
ensembles in evaluation mode.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from klomflow.training.ensemble import Ensemble
from klomflow.training.loop import autocast
from klomflow.unlearning.methods import bad_teaching as bad_teaching_method
from klomflow.unlearning.methods import scrub as scrub_method
from klomflow.unlearning.twins.common import (
    epoch_batches,
    finish,
    optimizer_step,
    sgd,
    training_rows,
    twin,
)


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


@twin
def scrub(models, datas, params):
    """methods.scrub: students from the originals against the frozen originals (teachers,
    evaluation mode); per epoch its learning rate, max-steps on the forget set in the first
    `msteps` epochs, then min-steps on the retain set."""
    device = datas[0].device
    teacher = _frozen(models, device)
    student = Ensemble(models).to(device)
    student.train()
    optimizer = sgd(student, params)
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
            for positions in epoch_batches(datas, len(datas[0].forget_indices),
                                            params["forget_batch_size"]):
                rows = training_rows(datas, positions, lambda data: data.forget_indices)
                optimizer_step(optimizer, -divergences(rows)[0])
        for positions in epoch_batches(datas, len(datas[0].retain_indices), params["batch_size"]):
            rows = training_rows(datas, positions, lambda data: data.retain_indices)
            divergence, logits = divergences(rows)
            # F.cross_entropy(logits.float(), labels) per model, on rows of classes.
            cross_entropies = F.cross_entropy(_rows(logits).flatten(0, 1),
                                              datas[0].train_y[rows].flatten(),
                                              reduction="none").view(rows.shape).mean(1)
            optimizer_step(optimizer,
                           params["gamma"] * cross_entropies + params["alpha"] * divergence)
    return finish(models, student)


@twin
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
        for batch in epoch_batches(datas, n, params["batch_size"]):
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
            optimizer_step(optimizer, kl.sum((1, 2)) / batch.shape[1])
    return finish(models, student)


