"""gradient_ascent, gradient_descent and neggrad_plus: one SGD step by hand against the
method's own step (sign of each term, beta weighting, which data)."""

import copy

import pytest
import torch
from conftest import record_cross_entropy, weights_of
from torch.nn import functional as F

from klomflow.unlearning.methods import gradient_ascent, gradient_descent, neggrad_plus


def gradient(model, x, y):
    """{name: d CE(model(x), y) / d weight}, the batch-mean cross-entropy, training mode."""
    model = copy.deepcopy(model).train()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def one_step(before, direction, lr, weight_decay=0.0):
    """Weights after one SGD step along `direction` (the loss gradient) with L2 decay.
    A first momentum step equals a plain one (the buffer starts at the gradient)."""
    return {name: before[name] - lr * (direction[name] + weight_decay * before[name])
            for name in direction}


def assert_moved_to(model, expected, alternatives):
    """The method's weights are the hand step's, and not any of the alternatives'."""
    after = dict(model.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(after[name].detach(), value, rtol=1e-5, atol=1e-6)
    for wrong in alternatives:
        assert any(not torch.allclose(after[name].detach(), wrong[name], rtol=1e-5, atol=1e-6)
                   for name in wrong)


def test_gradient_ascent_steps_up_the_forget_loss(tiny_problem):
    model, data = tiny_problem
    params = {**gradient_ascent.METHOD.defaults, "epochs": 1, "lr": 0.1,
              "batch_size": len(data.forget_indices)}  # one batch: the whole forget set
    before = weights_of(model)
    forget = gradient(model, data.forget_x, data.forget_y)
    retain = gradient(model, data.retain_x, data.retain_y)
    expected = one_step(before, {name: -g for name, g in forget.items()}, params["lr"])
    wrong = [one_step(before, forget, params["lr"]),  # descent
             one_step(before, {name: -g for name, g in retain.items()}, params["lr"])]
    assert_moved_to(gradient_ascent.unlearn(model, data, params), expected, wrong)


def test_gradient_descent_steps_down_the_retain_loss_with_decay(tiny_problem):
    model, data = tiny_problem
    params = {**gradient_descent.METHOD.defaults, "epochs": 1, "lr": 0.1, "weight_decay": 0.01,
              "batch_size": len(data.retain_indices)}
    before = weights_of(model)
    retain = gradient(model, data.retain_x, data.retain_y)
    everything = gradient(model, data.train_x, data.train_y)
    expected = one_step(before, retain, params["lr"], params["weight_decay"])
    wrong = [one_step(before, {name: -g for name, g in retain.items()}, params["lr"], 0.01),
             one_step(before, everything, params["lr"], params["weight_decay"]),
             one_step(before, retain, params["lr"])]  # no decay
    assert_moved_to(gradient_descent.unlearn(model, data, params), expected, wrong)


@pytest.mark.parametrize("beta", [0.9, 0.7])
def test_neggrad_plus_weighs_retain_descent_by_beta_and_forget_ascent_by_one_minus_beta(
        tiny_problem, beta):
    model, data = tiny_problem
    # One retain batch (the whole retain set) paired with one forget batch: one step.
    params = {**neggrad_plus.METHOD.defaults, "beta": beta, "epochs": 1, "lr": 0.1,
              "weight_decay": 0.0, "batch_size": len(data.retain_indices),
              "forget_batch_size": len(data.forget_indices)}
    before = weights_of(model)
    retain = gradient(model, data.retain_x, data.retain_y)
    forget = gradient(model, data.forget_x, data.forget_y)

    def combined(retain_weight, forget_weight):
        return {name: retain_weight * retain[name] + forget_weight * forget[name]
                for name in retain}

    expected = one_step(before, combined(beta, -(1 - beta)), params["lr"])
    wrong = [one_step(before, combined(1 - beta, -beta), params["lr"]),  # weights swapped
             one_step(before, combined(beta, 1 - beta), params["lr"]),  # forget descended
             one_step(before, combined(beta, 0.0), params["lr"])]  # forget set unused
    assert_moved_to(neggrad_plus.unlearn(model, data, params), expected, wrong)


def test_neggrad_plus_pairs_every_retain_batch_with_a_forget_batch(tiny_problem,
                                                                    monkeypatch):
    model, data = tiny_problem
    calls = record_cross_entropy(monkeypatch, neggrad_plus)
    params = {**neggrad_plus.METHOD.defaults, "epochs": 2, "batch_size": 36,
              "forget_batch_size": 5}
    neggrad_plus.unlearn(model, data, params)
    # 108 retain points in 3 batches per epoch; 12 forget points cycle in 5, 5, 2.
    assert [len(y) for _, y in calls] == [36, 5, 36, 5, 36, 2] * 2
