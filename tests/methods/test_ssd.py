import copy

import pytest
import torch
from conftest import weights_of
from torch.nn import functional as F

from klomflow.unlearning.methods import ssd


def reference_importance(model, x, y, batch_size):
    """The authors' loop: per batch, backward of the CE, add grad^2; divide by batches."""
    model.eval()
    totals = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    batches = 0
    for start in range(0, len(y), batch_size):
        model.zero_grad()
        F.cross_entropy(model(x[start:start + batch_size]), y[start:start + batch_size]).backward()
        for name, p in model.named_parameters():
            totals[name] += p.grad.pow(2)
        batches += 1
    return {name: total / batches for name, total in totals.items()}


def test_importance_is_the_mean_of_squared_minibatch_gradients(tiny_problem):
    model, data = tiny_problem
    # 120 points in batches of 50: the short last batch counts as a whole batch.
    fast = ssd.importances(model, data.train_x, data.train_y, 50, data.device)
    slow = reference_importance(copy.deepcopy(model), data.train_x, data.train_y, 50)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name])
    # Not the per-point average, not the square of the full-batch gradient.
    whole = ssd.importances(model, data.train_x, data.train_y, 120, data.device)
    assert any(not torch.allclose(fast[name], whole[name]) for name in fast)


def test_dampening_factors_by_hand():
    full = {"w": torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 2.0])}
    forget = {"w": torch.tensor([5.0, 20.0, 0.5, 3.0, 0.0, 40.0])}
    factors = ssd.dampening_factors(full, forget, alpha=10.0, lam=1.0)["w"]
    # 5 < 10*1: kept; 20 > 10: 1/20; 0.5: kept; 3 > 0: 0/3 = 0; 0 vs 0: kept; 40 > 20: 2/40.
    assert torch.equal(factors, torch.tensor([1.0, 0.05, 1.0, 0.0, 1.0, 0.05]))
    bounded = ssd.dampening_factors(full, forget, alpha=10.0, lam=100.0)["w"]
    # min(., 1): never amplifies.
    assert torch.equal(bounded, torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0]))


def run_and_expect(model, data, params):
    before = weights_of(model)
    original = copy.deepcopy(model)
    full = ssd.importances(original, data.train_x, data.train_y, params["batch_size"],
                           data.device)
    forget = ssd.importances(original, data.forget_x, data.forget_y, params["batch_size"],
                             data.device)
    after = ssd.unlearn(model, data, params).state_dict()
    selected_total = 0
    for name in full:
        selected = forget[name] > params["alpha"] * full[name]
        factor = torch.clamp(params["lambda"] * full[name] / forget[name], max=1.0)
        assert torch.equal(after[name][~selected], before[name][~selected]), name
        assert torch.equal(after[name][selected], before[name][selected] * factor[selected]), name
        selected_total += int(selected.sum())
    return before, after, selected_total


def test_only_selected_weights_change_each_by_exactly_its_factor(tiny_class_problem):
    model, data = tiny_class_problem
    params = {**ssd.METHOD.defaults, "alpha": 1.0, "lambda": 1.0, "batch_size": 16}
    before, after, selected = run_and_expect(model, data, params)
    changed = sum(int((after[name] != before[name]).sum()) for name in before)
    assert selected > 0 and changed > 0
    # With alpha >= lambda every selected factor is < 1, so every selected weight moves.
    assert changed == selected


def test_defaults_follow_the_same_rule(tiny_problem):
    model, data = tiny_problem
    run_and_expect(model, data, dict(ssd.METHOD.defaults))



def test_authors_order_takes_the_full_data_importances_over_retain_then_forget(
        tiny_class_problem):
    """The authors' D: an unshuffled loader over retain, then forget. Batch composition
    changes squared batch gradients, so the two orders give different dampening."""
    model, data = tiny_class_problem
    params = {**ssd.METHOD.defaults, "alpha": 1.0, "lambda": 1.0, "batch_size": 16,
              "importance_order": "retain_then_forget"}
    order = torch.cat([data.retain_indices, data.forget_indices])
    full = reference_importance(copy.deepcopy(model), data.train_x[order], data.train_y[order],
                                16)
    forget = reference_importance(copy.deepcopy(model), data.forget_x, data.forget_y, 16)
    factors = ssd.dampening_factors(full, forget, params["alpha"], params["lambda"])
    before = weights_of(model)
    index_order = ssd.unlearn(copy.deepcopy(model), data,
                              params | {"importance_order": "index"}).state_dict()
    after = ssd.unlearn(model, data, params).state_dict()
    for name in factors:
        torch.testing.assert_close(after[name], before[name] * factors[name])
    assert any(not torch.equal(after[name], index_order[name]) for name in factors)


def test_unknown_importance_order_is_refused(tiny_problem):
    model, data = tiny_problem
    with pytest.raises(ValueError, match="importance_order"):
        ssd.unlearn(model, data, {**ssd.METHOD.defaults, "importance_order": "shuffled"})
