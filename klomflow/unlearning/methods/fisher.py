"""The diagonal of the true Fisher information at a model's weights (fisher_forgetting, pbu).

F[name] = mean over points of sum_c p(c|x) * (d log p(c|x) / d weight)^2: the
expectation over the model's own predictive distribution, as in Golatkar et al.'s
code and nngeometry's FIM(variant="classif_logits", representation=PMatDiag).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F

from klomflow.training.loop import autocast

# Most Jacobian entries [points, classes, parameters] held at once (512 MiB of float32):
# the MLP takes `batch_size` points per step, ResNet-9 (6.5M weights, 10 classes) two.
JACOBIAN_BUDGET = 2**27


def fisher_diagonal(model: nn.Module, x: torch.Tensor, batch_size: int, device) -> dict:
    """Diagonal of the true Fisher at the model's weights, averaged over the points x.

    Points go through in batches of at most `batch_size` (fewer for large models, see
    JACOBIAN_BUDGET); the batching does not change the result.

    F[name] = mean over points of sum_c p(c|x) * (d log p(c|x) / d weight)^2, the
    expectation over the model's own predictive distribution (not the labels), as in
    Golatkar et al.'s code and nngeometry's FIM(variant="classif_logits"). Evaluation
    mode, so BatchNorm uses its running statistics. Returns {parameter name: [shape]}.
    """
    model.eval()
    params = {name: value.detach() for name, value in model.named_parameters()}
    buffers = {name: value.detach() for name, value in model.named_buffers()}

    def log_probabilities(weights, point):
        with autocast(device):
            logits = functional_call(model, (weights, buffers), (point.unsqueeze(0),))
        return F.log_softmax(logits.float(), dim=-1).squeeze(0)  # [C]

    # Per point, the Jacobian of the C log-probabilities: {name: [B, C, *shape]}.
    per_point_jacobian = vmap(jacrev(log_probabilities), in_dims=(None, 0))
    fisher = {name: torch.zeros_like(value) for name, value in params.items()}
    n_classes = class_probabilities(model, params, buffers, x[:1], device).shape[1]
    per_point = n_classes * sum(value.numel() for value in params.values())
    batch_size = max(1, min(batch_size, JACOBIAN_BUDGET // per_point))
    for start in range(0, len(x), batch_size):
        points = x[start:start + batch_size]
        jacobian = per_point_jacobian(params, points)
        with torch.no_grad():
            probabilities = class_probabilities(model, params, buffers, points, device)
            for name, value in jacobian.items():
                # In place and as one matrix-vector product: the Jacobians [B * C, P] are
                # the largest tensors here, and memory traffic is what this step costs.
                squared = value.flatten(0, 1).pow_(2)
                fisher[name] += torch.tensordot(probabilities.flatten(), squared, dims=1)
    return {name: value / len(x) for name, value in fisher.items()}


def class_probabilities(model, params, buffers, points, device):
    """Class probabilities [B, C] of a batch under the given weights."""
    with autocast(device):
        logits = functional_call(model, (params, buffers), (points,))
    return F.softmax(logits.float(), dim=-1)
