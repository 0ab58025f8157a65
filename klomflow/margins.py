"""Margins: how strongly a model prefers the true label, the quantity KLOM compares."""

from __future__ import annotations

import numpy as np
import torch


def margins_from_logits(logits, labels):
    """margin = z[y] - logsumexp(z[j] for j != y), computed stably in float32 or better.

    logits: [..., n_points, n_classes] (torch or numpy); labels: [n_points].
    Returns the same leading shape without the class axis, as float32 numpy.
    """
    logits = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits)
    logits = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    labels = labels.to(device=logits.device, dtype=torch.long)
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true_logit = logits.gather(-1, index).squeeze(-1)
    # Mask the true class with -inf; logsumexp subtracts the maximum internally.
    others = logits.scatter(-1, index, float("-inf"))
    margin = true_logit - torch.logsumexp(others, dim=-1)
    return margin.detach().cpu().numpy().astype(np.float32)


def margins_reference(logits, labels):
    """Direct formula log(p_y / (1 - p_y)) in float64, for tests."""
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    index = np.broadcast_to(np.asarray(labels)[..., None], probabilities.shape[:-1] + (1,))
    p_true = np.take_along_axis(probabilities, index, axis=-1)[..., 0]
    return np.log(p_true / (1 - p_true))
