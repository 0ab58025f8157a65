"""random_label (RL): train on the forget set with random labels, then on the retain set.

Paper: Graves, Nagisetty and Ganesh 2021, "Amnesiac Machine Learning" (the
amnesiac variant: relabel the sensitive points with any label but their
own); the "RL" baseline of Fan et al. 2024 (SalUn), whose CIFAR-10 code
this loop follows.
Update, every epoch: one pass of SGD on CE(model(x_F), random labels) over
the forget set, then one pass of SGD on CE(model(x_R), y_R) over the retain
set. Data: forget set (inputs, and with `amnesiac: true` its labels, to avoid
them) and retain set.

Differences from the authors' code: with `amnesiac: true` (the default) a
random label is never the point's true label, as in Graves et al.; SalUn's
code draws uniformly from all classes, which `amnesiac: false` gives. Labels
are redrawn for every epoch (SalUn draws them per forget batch, which is
the same distribution). The forget pass comes before the retain pass, as in
SalUn's CIFAR-10 branch (its CIFAR-100 branch shuffles the two sets
together). No learning-rate warm-up. 5 epochs at batch 64 instead of
SalUn's 10 at batch 256: on the 1,437-point digits training set batch 64
already gives 4x the steps per epoch, and the class is gone (forget
accuracy 0.0, README) within 5.
"""

import torch

from klomflow.methods.base import (
    Method,
    cross_entropy,
    cross_entropy_epoch,
    sgd,
    shuffled_batches,
)


def random_labels(true_labels, n_classes: int, generator: torch.Generator, amnesiac: bool):
    """Labels [n] drawn uniformly; with `amnesiac`, uniformly among the other classes."""
    n = len(true_labels)
    if not amnesiac:
        return torch.randint(n_classes, (n,), generator=generator).to(true_labels.device)
    # A shift of 1..n_classes-1 modulo n_classes lands on each other class once.
    shift = torch.randint(1, n_classes, (n,), generator=generator).to(true_labels.device)
    return (true_labels + shift) % n_classes


def random_label_epoch(model, optimizer, data, params, step=None):
    """One pass over the forget set with random labels, then one over the retain set.

    `step()`, when given, replaces `optimizer.step()` after each backward
    pass (SalUn masks the gradients there).
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


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        random_label_epoch(model, optimizer, data, params)
    return model


METHOD = Method(
    name="random_label",
    unlearn=unlearn,
    defaults={"lr": 0.01, "epochs": 5, "batch_size": 64, "forget_batch_size": 64,
              "momentum": 0.9, "weight_decay": 5e-4, "amnesiac": True},
)
