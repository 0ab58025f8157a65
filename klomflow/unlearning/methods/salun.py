"""salun (SalUn, Fan et al. 2024, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR).

Saliency mask m = 1 on the top `mask_ratio` fraction of all weights by
|gradient of -CE on the forget set| at the original weights; then
random-label training (as random_label: forget set with random labels, then
retain set, each epoch; klomflow.unlearning.methods.base.random_label_epoch) in which
only the salient weights move: theta <- theta - lr * m * update. Data:
forget set (for the mask and the random-label pass) and retain set.

Choices and differences from the authors' code (OPTML-Group/Unlearn-Saliency,
Classification/generate_mask.py and unlearn/RL.py):
- The threshold is global, over all parameter tensors together, as in the
  authors' generate_mask.py (ranks of the concatenated |gradients|), not per
  tensor. The gradient is the forget-set mean, in evaluation mode, at the
  original weights, computed once; one version of the authors' script also
  stepped an optimiser while accumulating, so its mask came from a moving model.
- Weight decay is added to the gradient before the mask is applied (the
  optimiser itself has none), so neither decay nor momentum can move a
  weight outside the mask; afterwards those weights are copied back from the
  originals as well, so they stay bit-identical whatever the optimiser does.
  A published version masked only the gradient and let SGD's own weight
  decay and momentum move them.
- Random labels are uniform over all classes by default (`amnesiac: false`),
  as in the authors' code. BatchNorm running statistics are buffers, not
  weights: they follow the training batches as in the authors' code.
- 5 epochs at batch 64 and no learning-rate warm-up, as random_label.py
  (the authors: 10 epochs, batch 256, warm-up): batch 64 on the digits
  training set gives 4x the steps per epoch, and the class is gone (forget
  accuracy 0.0, docs/methods.md) within 5.
"""

import torch

from klomflow.training.loop import autocast
from klomflow.unlearning.methods.base import implement, random_label_epoch


def forget_gradient(model, data, batch_size: int) -> dict:
    """{name: gradient of the mean -CE over the forget set} at the current weights, eval mode."""
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in parameters.items()}
    was_training = model.training
    model.eval()
    n_forget = len(data.forget_indices)
    for index in data.forget_indices.split(batch_size):
        with autocast(data.device):
            loss = -torch.nn.functional.cross_entropy(
                model(data.train_x[index]), data.train_y[index], reduction="sum") / n_forget
        gradients = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
        for name, gradient in zip(parameters, gradients):
            if gradient is not None:
                total[name] += gradient
    model.train(was_training)
    return total


def saliency_mask(gradients: dict, mask_ratio: float) -> dict:
    """{name: bool mask}, True on the int(mask_ratio * n_weights) largest |gradients| overall."""
    flat = torch.cat([g.detach().abs().flatten().float() for g in gradients.values()])
    k = int(mask_ratio * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, gradient in gradients.items():
        masks[name] = chosen[start:start + gradient.numel()].view_as(gradient)
        start += gradient.numel()
    return masks


def masked_step(model, optimizer, masks: dict, originals: dict, weight_decay: float):
    """An optimiser step that can change only the weights inside the saliency mask."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.grad is None or name not in masks:
                continue
            if weight_decay:
                parameter.grad.add_(parameter, alpha=weight_decay)
            # Zero gradients outside the mask keep their momentum buffers at zero.
            parameter.grad.mul_(masks[name])
    optimizer.step()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in masks:
                parameter.copy_(torch.where(masks[name], parameter, originals[name]))


def unlearn(model, data, params):
    masks = saliency_mask(forget_gradient(model, data, params["forget_batch_size"]),
                          params["mask_ratio"])
    originals = {name: p.detach().clone() for name, p in model.named_parameters() if name in masks}
    model.train()
    # Decay goes through the gradient in masked_step, so the optimiser has none.
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"])

    def step():
        masked_step(model, optimizer, masks, originals, params["weight_decay"])

    for _ in range(params["epochs"]):
        random_label_epoch(model, optimizer, data, params, step=step)
    return model


METHOD = implement("salun", unlearn)
