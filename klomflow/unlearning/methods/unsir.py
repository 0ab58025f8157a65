"""unsir (Tarun, Chundawat, Mandal & Kankanhalli 2023, "Fast Yet Effective Machine
Unlearning", IEEE TNNLS; UNSIR = unlearning by selective impair and repair).

Update, in three steps:
1. noise: for every forgotten class c, learn a noise batch N_c (input-shaped) that
   maximises the frozen original model's CE for label c, with an L2 penalty:
   minimise -CE(model(N_c), c) + noise_l2 * mean over samples of ||N_c||^2 (Adam);
2. impair: train the model on the noise (labelled c, repeated `noise_copies` times)
   mixed with the retain set, `impair_epochs` epochs (Adam);
3. repair: train on the retain set only, `repair_epochs` epochs (Adam).

Data: retain set, and of the forget set only its labels (which classes) and the
input shape; the forget images are never read. Class unlearning only.

As in the authors' notebook (github.com/vikram2000b/Fast-Machine-Unlearning) and the
copy in the SSD repository: noise starts from N(0, 1), Adam lr 0.1, penalty weight
0.1 on the per-sample sum of squares; 1 impair and 1 repair epoch with Adam.
Differences:
- the noise is optimised against the original model in evaluation mode (the notebook
  left the model in training mode, so BatchNorm statistics drifted on the noise);
- every noise sample is used: the authors' loader appends `range(batch[0].size(0))`
  samples per copy, i.e. only as many noise samples as the image has channels (3);
- the noise carries its class label (the notebook labels every noise batch 0, which
  only matters when several classes are forgotten);
- by default the whole retain set is used (`retain_per_class: 0`; digits has ~130
  points per class); the authors take the first 1000 (notebook) or 500 (SSD
  repository's copy) points of each retained class, which `retain_per_class` gives
  (the first in index order; `retain_sample`), for the impair and the repair step;
- a noise batch of 64 samples, repeated 4 times, and batches of 64 (the notebook:
  256 samples, 20 copies, batches of 256, sized for CIFAR, which
  config/paper_cifar10.yaml sets); scaled down with the digits training set (1,437
  points), the noise is 256 of the ~1,550 samples of the impair epoch on a digits class;
- learning rates are tuned to the digits MLP: with the notebook's impair lr 0.02 /
  repair lr 0.01, Adam on the retain set alone already erases the class (plain
  catastrophic forgetting, the noise is not needed), and with the SSD copy's 1e-4 nothing
  is forgotten. At impair 5e-3 / repair 1e-3 the class goes (forget accuracy 0.999 ->
  0.0) while without the noise it would stay at ~0.25: the noise does the forgetting.
  Its effect depends on the data: on well-separated Gaussian blobs the model just learns
  "noise -> forget class" and forgets nothing, and on digits the noise's label hardly
  matters (labelled with another class it erases the class as well).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from klomflow.training.loop import autocast
from klomflow.unlearning.methods.base import cross_entropy, implement, shuffled_batches


def error_maximising_noise(model, label: int, input_shape, params, generator, device):
    """A noise batch [noise_size, *input_shape] that the frozen model misclassifies
    as far as possible away from `label`."""
    noise = torch.randn((params["noise_size"], *input_shape), generator=generator).to(device)
    noise.requires_grad_(True)
    optimizer = torch.optim.Adam([noise], lr=params["noise_lr"])
    labels = torch.full((params["noise_size"],), label, dtype=torch.long, device=device)
    model.eval()
    for _ in range(params["noise_steps"]):
        loss = noise_loss(model, noise, labels, params["noise_l2"], device)
        # Gradient with respect to the noise only: the model stays untouched.
        noise.grad, = torch.autograd.grad(loss, [noise])
        optimizer.step()
    return noise.detach()


def noise_loss(model, noise, labels, l2_weight: float, device):
    """-CE(model(noise), labels) + l2_weight * mean over samples of the sum of squares."""
    with autocast(device):
        logits = model(noise)
    return (-F.cross_entropy(logits.float(), labels)
            + l2_weight * noise.pow(2).flatten(1).sum(1).mean())


def forget_classes(data) -> list[int]:
    return torch.unique(data.forget_y).tolist()


def impair_noise(model, data, params):
    """The impair step's noise samples and labels: for each forgotten class its noise
    batch, repeated `noise_copies` times, labelled with that class."""
    input_shape = tuple(data.train_x.shape[1:])
    noises, labels = [], []
    for label in forget_classes(data):
        noise = error_maximising_noise(model, label, input_shape, params, data.generator,
                                       data.device)
        noises.append(noise.repeat(params["noise_copies"], *([1] * len(input_shape))))
        labels.append(torch.full((len(noises[-1]),), label, dtype=torch.long,
                                 device=data.device))
    return torch.cat(noises), torch.cat(labels)


def retain_sample(data, per_class: int) -> torch.Tensor:
    """The retain points UNSIR trains on: every one (per_class 0), or the first
    `per_class` of each class in index order, as the authors take them."""
    if per_class == 0:
        return data.retain_indices
    retain = torch.sort(data.retain_indices).values
    labels = data.train_y[retain]
    keep = torch.zeros(len(retain), dtype=torch.bool, device=retain.device)
    for label in torch.unique(labels):
        keep[torch.nonzero(labels == label).flatten()[:per_class]] = True
    return retain[keep]


def unlearn(model, data, params):
    noise_x, noise_y = impair_noise(model, data, params)
    retain_indices = retain_sample(data, params["retain_per_class"])
    n_noise, n_retain = len(noise_y), len(retain_indices)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params["impair_lr"])
    for _ in range(params["impair_epochs"]):
        # Positions below n_noise are noise samples, the rest retain points.
        for batch in shuffled_batches(n_noise + n_retain, params["batch_size"],
                                      data.generator, data.device):
            from_noise = batch[batch < n_noise]
            retain = retain_indices[batch[batch >= n_noise] - n_noise]
            x = torch.cat([noise_x[from_noise], data.train_x[retain]])
            y = torch.cat([noise_y[from_noise], data.train_y[retain]])
            step(model, optimizer, x, y, data.device)

    optimizer = torch.optim.Adam(model.parameters(), lr=params["repair_lr"])
    for _ in range(params["repair_epochs"]):
        for batch in shuffled_batches(n_retain, params["batch_size"], data.generator,
                                      data.device):
            retain = retain_indices[batch]
            step(model, optimizer, data.train_x[retain], data.train_y[retain], data.device)
    return model


def step(model, optimizer, x, y, device):
    loss = cross_entropy(model, x, y, device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


METHOD = implement("unsir", unlearn)
