"""random_label (RL): train on the forget set with random labels, then on the retain set.

Paper: Graves, Nagisetty and Ganesh 2021, "Amnesiac Machine Learning" (the
amnesiac variant: relabel the sensitive points with any label but their
own); the "RL" baseline of Fan et al. 2024 (SalUn), whose CIFAR-10 code
this loop follows.
Update, every epoch: one pass of SGD on CE(model(x_F), random labels) over
the forget set, then one pass of SGD on CE(model(x_R), y_R) over the retain
set (klomflow.unlearning.methods.base.random_label_epoch, shared with salun). Data:
forget set (inputs, and with `amnesiac: true` its labels, to avoid them) and
retain set.

Differences from the authors' code: with `amnesiac: true` (the default) a
random label is never the point's true label, as in Graves et al.; SalUn's
code draws uniformly from all classes, which `amnesiac: false` gives. Labels
are redrawn for every epoch (SalUn draws them per forget batch, which is
the same distribution). The forget pass comes before the retain pass, as in
SalUn's CIFAR-10 branch (its CIFAR-100 branch shuffles the two sets
together). No learning-rate warm-up. 5 epochs at batch 64 instead of
SalUn's 10 at batch 256: on the 1,437-point digits training set batch 64
already gives 4x the steps per epoch, and the class is gone (forget
accuracy 0.0, docs/methods.md) within 5.
"""

from klomflow.unlearning.methods.base import implement, random_label_epoch, sgd


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        random_label_epoch(model, optimizer, data, params)
    return model


METHOD = implement("random_label", unlearn)
