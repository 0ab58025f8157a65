"""dmm: fine-tuning towards datamodel-predicted logits (from F's rows of beta)."""

import numpy as np
import torch
from conftest import make_tiny_problem, max_weight_change, weights_of

from klomflow.training.loop import predict_logits
from klomflow.unlearning.methods.dmm import METHOD

# Enough steps for a tiny model to get close to its targets in a test.
FAST = METHOD.defaults | {"lr": 1e-2, "lr_decay": 1.0, "epochs": 150}


def random_datamodels(data, scale=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (len(data.train_y), len(data.train_y), data.n_classes)  # no validation points here
    return (torch.randn(shape, generator=generator) * scale).numpy()


def test_matches_original_logits_minus_the_forget_weights():
    model, data = make_tiny_problem()
    # Weights that a 16-unit MLP can follow: every training point shifts every
    # point's logits by its own random class vector, plus small noise.
    generator = torch.Generator().manual_seed(3)
    shift = torch.randn(len(data.train_y), 1, data.n_classes, generator=generator) * 0.2
    beta = (shift + 0.01 * torch.randn(len(data.train_y), len(data.train_y), data.n_classes,
                                       generator=generator)).numpy()
    forget = data.forget_indices.numpy()
    data.extras = {"datamodel_rows": beta[forget]}
    target = predict_logits(model, data.train_x, data.device) - beta[forget].sum(axis=0)
    before_weights = weights_of(model)
    before = ((predict_logits(model, data.forget_x, data.device) - target[forget]) ** 2).mean()
    model = METHOD.unlearn(model, data, FAST)
    after = ((predict_logits(model, data.forget_x, data.device) - target[forget]) ** 2).mean()
    assert after < 0.1 * before, (before, after)
    assert max_weight_change(before_weights, model) > 1e-2


def test_no_correction_leaves_the_model_where_it_is():
    # multiplier 0: the targets are the original's own logits, so the MSE
    # gradient is zero and Adam does not move.
    model, data = make_tiny_problem()
    data.extras = {"datamodel_rows": random_datamodels(data)[data.forget_indices.numpy()]}
    before = weights_of(model)
    model = METHOD.unlearn(model, data, FAST | {"multiplier": 0.0})
    assert max_weight_change(before, model) < 1e-6


def test_paper_defaults_move_the_model_towards_the_targets():
    model, data = make_tiny_problem()
    beta = random_datamodels(data, scale=0.3)
    forget = data.forget_indices.numpy()
    data.extras = {"datamodel_rows": beta[forget]}
    original = predict_logits(model, data.forget_x, data.device)
    target = original - beta[forget][:, forget].sum(axis=0)
    model = METHOD.unlearn(model, data, METHOD.defaults)
    after = predict_logits(model, data.forget_x, data.device)
    assert ((after - target) ** 2).mean() < ((original - target) ** 2).mean()


def test_declares_datamodel_rows_and_is_not_a_diagnostic():
    assert METHOD.needs == ("datamodel_rows",) and not METHOD.diagnostic
    assert not METHOD.outputs_logits
    assert np.isclose(METHOD.defaults["lr"], 5e-4) and METHOD.defaults["batch_size"] == 512
