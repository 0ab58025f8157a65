"""bad_teaching (Chundawat, Tarun, Mandal and Kankanhalli 2023, "Can Bad Teaching
Induce Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher", AAAI).

The student starts at the original weights. Its target on a forget point is
the softmax of an "incompetent" teacher (a randomly initialised model of
the same architecture), on a retain point the softmax of the competent
teacher (the original model); it minimises KL(target || student) at
temperature T over the forget set mixed with a random `retain_fraction` of
the retain set. Data: forget set (inputs only) and part of the retain set.

Differences from the authors' code (vikram2000b/bad-teaching-unlearning):
the KL is averaged over points (`batchmean`, a true KL) rather than over
points and classes (`F.kl_div`'s default `mean`), a constant factor of
n_classes that Adam mostly absorbs. The incompetent teacher is the model's
own architecture re-initialised with each submodule's `reset_parameters()`
from a seed drawn from `data.generator`, on the CPU, so it is the same on any
device. Defaults: the authors ran 1 epoch of Adam at 1e-4 with batches of
256; for a CIFAR-10 class (5,000 points plus 30% of 45,000) that is ~70
steps, but on digits it is 3 steps and changes nothing, so the defaults
take 5 epochs of batches of 64 (~45 steps for a class) at 1e-3.
"""

import copy

import torch
from torch.nn import functional as F

from klomflow.training.loop import autocast
from klomflow.unlearning.methods.base import implement, shuffled_batches


def incompetent_teacher(model, generator: torch.Generator):
    """`model`'s architecture with fresh random weights drawn from `generator`, frozen."""
    teacher = copy.deepcopy(model)
    device = next(model.parameters()).device
    teacher.to("cpu")
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in teacher.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def competent_teacher(model):
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_targets(x, is_forget, competent, incompetent, temperature, device):
    """Targets [n, C]: the incompetent teacher's softmax on forget rows, else the competent's."""
    with torch.no_grad(), autocast(device):
        good = F.softmax(competent(x).float() / temperature, dim=1)
        bad = F.softmax(incompetent(x).float() / temperature, dim=1)
    return torch.where(is_forget[:, None], bad, good)


def bad_teaching(student, competent, incompetent, data, params):
    """Train `student` in place towards the two teachers; returns the student."""
    n_retain = len(data.retain_indices)
    n_retain_used = round(params["retain_fraction"] * n_retain)
    retain_used = data.retain_indices[
        torch.randperm(n_retain, generator=data.generator)[:n_retain_used].to(data.device)]
    indices = torch.cat([data.forget_indices, retain_used])
    is_forget = torch.arange(len(indices), device=data.device) < len(data.forget_indices)
    temperature = params["temperature"]
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=params["lr"])
    for _ in range(params["epochs"]):
        for batch in shuffled_batches(len(indices), params["batch_size"], data.generator,
                                      data.device):
            x = data.train_x[indices[batch]]
            target = teacher_targets(x, is_forget[batch], competent, incompetent, temperature,
                                     data.device)
            with autocast(data.device):
                student_logits = student(x)
            loss = F.kl_div(F.log_softmax(student_logits.float() / temperature, dim=1), target,
                            reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student


def unlearn(model, data, params):
    incompetent = incompetent_teacher(model, data.generator)
    return bad_teaching(model, competent_teacher(model), incompetent, data, params)


METHOD = implement("bad_teaching", unlearn)
