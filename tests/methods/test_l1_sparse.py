import copy
import itertools

import pytest
import torch
from conftest import max_weight_change, weights_of

from klomflow.unlearning.methods import l1_sparse


def test_l1_weight_falls_linearly_from_alpha_to_zero():
    weights = [l1_sparse.l1_weight(0.2, step, 10) for step in range(11)]
    assert weights[0] == 0.2
    assert weights[-1] == 0.0
    assert weights[5] == pytest.approx(0.1)
    steps = [a - b for a, b in itertools.pairwise(weights)]
    assert steps == pytest.approx([0.02] * 10)
    assert l1_sparse.l1_weight(0.2, 12, 10) == 0.0


def test_training_follows_the_schedule_step_by_step(tiny_problem, monkeypatch):
    model, data = tiny_problem
    calls = []
    schedule = l1_sparse.l1_weight

    def recording(alpha, step, total_steps):
        calls.append((alpha, step, total_steps))
        return schedule(alpha, step, total_steps)

    monkeypatch.setattr(l1_sparse, "l1_weight", recording)
    params = {**l1_sparse.METHOD.defaults, "epochs": 2, "batch_size": 16}
    l1_sparse.unlearn(model, data, params)
    total = 2 * 7  # 108 retain points in batches of 16
    assert calls == [(params["alpha"], step, total) for step in range(total)]


def test_the_penalty_shrinks_the_l1_norm(tiny_problem):
    model, data = tiny_problem
    before = weights_of(model)
    params = {**l1_sparse.METHOD.defaults, "alpha": 0.2}
    penalised = l1_sparse.unlearn(copy.deepcopy(model), copy.deepcopy(data), params)
    plain = l1_sparse.unlearn(model, data, {**params, "alpha": 0.0})
    assert max_weight_change(before, penalised) > 1e-3
    with torch.no_grad():
        assert float(l1_sparse.l1_norm(penalised)) < 0.9 * float(l1_sparse.l1_norm(plain))
