"""Datamodels on real training: DM-Direct predicts retrained margins better than the original.

A reduced version of the default setting (300 digits training points, the
default MLP and recipe, 400 subset models): the datamodel prediction of the
forget points' margins without F must be closer to, and correlate better
with, the mean margins of models retrained without F than the original
models' margins are, and its predicted change must follow the real one.
"""

import numpy as np
import pytest
import torch

from klomflow.data.datasets import load_digits
from klomflow.metrics.margins import margins_from_logits
from klomflow.training.datamodels import fit_datamodels, predicted_logits, subset_masks
from klomflow.training.loop import Recipe, predict_logits, train_model
from klomflow.training.models import build_model

N_TRAIN, N_FORGET, N_SUBSET_MODELS, RIDGE = 300, 30, 400, 0.03
N_ORIGINALS, N_ORACLES = 10, 20


def train_logits(x, y, eval_x, keep, seed):
    model = build_model({"name": "mlp", "hidden": [256]}, (64,), 10, init_seed=seed)
    keep = torch.as_tensor(keep)
    train_model(model, x[keep], y[keep], Recipe(), torch.Generator().manual_seed(seed + 1),
                torch.device("cpu"), log=lambda message: None)
    return predict_logits(model, eval_x, torch.device("cpu"))


def correlation(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.slow
def test_dm_direct_predicts_retrained_margins_better_than_the_original():
    digits = load_digits(0.2, 0)
    x, y = digits.train_x[:N_TRAIN], digits.train_y[:N_TRAIN]
    eval_x = torch.cat([x, digits.val_x])
    labels = torch.cat([y, digits.val_y]).numpy()
    forget = np.sort(np.random.default_rng(0).choice(N_TRAIN, N_FORGET, replace=False))
    everything, retain = np.arange(N_TRAIN), np.setdiff1d(np.arange(N_TRAIN), forget)
    originals = np.stack([train_logits(x, y, eval_x, everything, 1000 + seed)
                          for seed in range(N_ORIGINALS)])
    oracles = np.stack([train_logits(x, y, eval_x, retain, 2000 + seed)
                        for seed in range(N_ORACLES)])
    masks = subset_masks(N_TRAIN, N_SUBSET_MODELS, 0.5, seed=0)
    subset_logits = np.stack([train_logits(x, y, eval_x, np.flatnonzero(mask), 3000 + index)
                              for index, mask in enumerate(masks)])
    beta, _ = fit_datamodels(masks, subset_logits, RIDGE)
    predicted = np.stack([predicted_logits(logits, beta[forget]) for logits in originals])

    oracle_mean = margins_from_logits(oracles, labels)[:, forget].mean(axis=0)
    original = margins_from_logits(originals, labels)[:, forget]  # [n_models, n_forget]
    dm_direct = margins_from_logits(predicted, labels)[:, forget]
    # Each model's margins against the oracles' mean margins (as KLOM pairs them).
    assert (np.mean([correlation(m, oracle_mean) for m in dm_direct])
            > np.mean([correlation(m, oracle_mean) for m in original]))
    # Closer on average, and the predicted change follows the real one.
    error = np.abs(dm_direct.mean(0) - oracle_mean).mean()
    original_error = np.abs(original.mean(0) - oracle_mean).mean()
    assert error < 0.85 * original_error, (error, original_error)
    shift = correlation(dm_direct.mean(0) - original.mean(0), oracle_mean - original.mean(0))
    assert shift > 0.4, shift
