"""oracle_matching: fine-tuning towards the mean of k randomly drawn held-out oracles' logits."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_problem, max_weight_change, weights_of

from klomflow.training.loop import Recipe, predict_logits, train_model
from klomflow.training.models import build_model
from klomflow.unlearning.methods import oracle_matching
from klomflow.unlearning.methods.matching import finetuning_indices
from klomflow.unlearning.methods.oracle_matching import METHOD, oracle_subset

# Enough steps for a tiny model to get close to its targets in a test.
FAST = METHOD.defaults | {"n_oracles": 3, "lr": 1e-2, "lr_decay": 1.0, "epochs": 150}


def oracle_logits(data, n_oracles, seed=10):
    """[n_oracles, n_points, n_classes] from models trained without F (the tiny recipe)."""
    logits = []
    for index in range(n_oracles):
        model = build_model({"name": "mlp", "hidden": [16]}, tuple(data.train_x.shape[1:]),
                            data.n_classes, init_seed=seed + index)
        train_model(model, data.retain_x, data.retain_y,
                    Recipe(epochs=15, batch_size=16, lr=0.05, schedule="constant"),
                    torch.Generator().manual_seed(seed + index), torch.device("cpu"),
                    log=lambda message: None)
        logits.append(predict_logits(model, data.train_x, torch.device("cpu")))
    return np.stack(logits)


def test_matches_the_mean_of_its_drawn_oracles_only():
    model, data = make_tiny_problem()
    oracles = oracle_logits(data, 3)
    # Two further "oracles" far off: a draw that used them would pull the targets by ~20.
    garbage = np.full((2, *oracles.shape[1:]), 50.0, dtype=np.float32)
    holdout = np.concatenate([oracles, garbage])
    data.extras = {"holdout_oracle_logits": holdout}
    params = FAST | {"n_oracles": 2}
    # The oracles and the set OM fine-tunes on: its first two draws, replayed here.
    seed = next(seed for seed in range(100)
                if set(oracle_subset(5, 2, torch.Generator().manual_seed(seed))) <= {0, 1, 2})
    data.generator.manual_seed(seed)
    chosen = oracle_subset(len(holdout), 2, data.generator)
    indices = finetuning_indices(data, params).numpy()
    target = holdout[chosen].mean(axis=0)
    forget = data.forget_indices.numpy()
    before_weights = weights_of(model)
    before = ((predict_logits(model, data.train_x, data.device) - target)[forget] ** 2).mean()

    data.generator.manual_seed(seed)
    model = METHOD.unlearn(model, data, params)

    after_logits = predict_logits(model, data.train_x, data.device)
    after_forget = ((after_logits - target)[forget] ** 2).mean()
    after_set = ((after_logits - target)[indices] ** 2).mean()
    assert after_forget < 0.1 * before and after_set < 0.1 * before, (before, after_forget)
    assert max_weight_change(before_weights, model) > 1e-2


class RecordingExtras(dict):
    """Extras that remember which inputs a method read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


def test_each_model_draws_its_own_oracles_from_the_held_out_ones_only(monkeypatch):
    """Oracle r's logits are 2**r everywhere, so a target's value names the subset."""
    n_holdout, k = 12, 3
    targets = []
    monkeypatch.setattr(oracle_matching, "match_logits",
                        lambda model, data, indices, target, params: targets.append(target))
    subsets = []
    for seed in range(4):  # the generators of four unlearned models
        model, data = make_tiny_problem()
        n_points = len(data.train_y)
        holdout = np.broadcast_to(2.0 ** np.arange(n_holdout)[:, None, None],
                                  (n_holdout, n_points, data.n_classes)).astype(np.float32)
        # The scored oracles sit beside them; the method must never read them.
        data.extras = RecordingExtras({"holdout_oracle_logits": holdout,
                                       "oracle_logits": np.full_like(holdout, -1.0)})
        data.generator = torch.Generator().manual_seed(seed)
        METHOD.unlearn(model, data, METHOD.defaults | {"n_oracles": k})
        assert data.extras.read == {"holdout_oracle_logits"}
        target = np.asarray(targets[-1])
        assert np.all(target == target.flat[0])
        total = int(round(float(target.flat[0]) * k))
        subset = {r for r in range(n_holdout) if total >> r & 1}
        assert len(subset) == k
        # What the model's generator draws first is what it matched.
        expected = oracle_subset(n_holdout, k, torch.Generator().manual_seed(seed))
        assert subset == set(expected.tolist())
        subsets.append(frozenset(subset))
    # Not the first k for everyone: each model matched its own subset.
    assert len(set(subsets)) == len(subsets)


def test_paper_defaults_move_the_model_towards_the_oracles():
    model, data = make_tiny_problem()
    oracles = oracle_logits(data, 10)
    data.extras = {"holdout_oracle_logits": oracles}
    target = oracles.mean(axis=0)[data.forget_indices.numpy()]
    before = ((predict_logits(model, data.forget_x, data.device) - target) ** 2).mean()
    model = METHOD.unlearn(model, data, METHOD.defaults)
    after = ((predict_logits(model, data.forget_x, data.device) - target) ** 2).mean()
    assert after < before


def test_refuses_fewer_oracles_than_asked():
    model, data = make_tiny_problem()
    data.extras = {"holdout_oracle_logits": np.zeros((2, len(data.train_y), 3), np.float32)}
    with pytest.raises(ValueError, match="n_oracles"):
        METHOD.unlearn(model, data, METHOD.defaults)


def test_finetuning_set_is_forget_repeated_plus_a_retain_sample():
    _, data = make_tiny_problem()
    n_forget = len(data.forget_indices)
    indices = finetuning_indices(data, METHOD.defaults | {"forget_mult": 2.5, "retain_mult": 3.0})
    forget_part, retain_part = indices[: int(2.5 * n_forget)], indices[int(2.5 * n_forget):]
    forget = data.forget_indices
    assert torch.equal(forget_part, torch.cat([forget, forget, forget[: n_forget // 2]]))
    assert len(retain_part) == 3 * n_forget == len(set(retain_part.tolist()))
    assert set(retain_part.tolist()) <= set(data.retain_indices.tolist())


def test_declares_its_needs_and_is_a_diagnostic():
    assert METHOD.needs == ("holdout_oracle_logits",)
    assert METHOD.diagnostic
