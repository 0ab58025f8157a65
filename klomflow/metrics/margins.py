"""Margins: how strongly a model prefers the true label, the quantity KLOM compares."""

from __future__ import annotations

import numpy as np


def margins_from_logits(logits, labels) -> np.ndarray:
    """margin = z[y] - logsumexp(z[j] for j != y), computed stably in float64.

    logits: [..., n_points, n_classes]; labels: [n_points].
    Returns float32 [..., n_points].
    """
    logits = np.asarray(logits, dtype=np.float64)
    index = np.broadcast_to(np.asarray(labels)[..., None], logits.shape[:-1] + (1,))
    true_logit = np.take_along_axis(logits, index, axis=-1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, index, -np.inf, axis=-1)
    # Subtract the largest other logit before exponentiating (no overflow).
    largest = others.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):  # NaN logits of diverged models stay NaN
        log_sum = largest[..., 0] + np.log(np.exp(others - largest).sum(axis=-1))
    return (true_logit - log_sum).astype(np.float32)


def margins_reference(logits, labels):
    """Direct formula log(p_y / (1 - p_y)) in float64, for tests."""
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    index = np.broadcast_to(np.asarray(labels)[..., None], probabilities.shape[:-1] + (1,))
    p_true = np.take_along_axis(probabilities, index, axis=-1)[..., 0]
    return np.log(p_true / (1 - p_true))
