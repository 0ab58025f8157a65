"""dm_direct: the datamodel-predicted logits, original outputs minus F's summed weights
(the forget set's rows of beta, as the compute_datamodel_rows rule writes them)."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_problem, weights_of

from klomflow.training.loop import predict_logits
from klomflow.unlearning.methods.dm_direct import METHOD


def with_datamodels(data, n_val=5, seed=0):
    """Give `data` evaluation points (training then `n_val` extra points) and F's rows of
    random weights beta; returns the whole beta [n_train, n_points, n_classes]."""
    generator = torch.Generator().manual_seed(seed)
    val_x = torch.randn(n_val, data.train_x.shape[1], generator=generator)
    data.eval_x = torch.cat([data.train_x, val_x])
    n_points = len(data.eval_x)
    beta = torch.randn(len(data.train_y), n_points, data.n_classes, generator=generator) * 0.1
    data.extras = {"datamodel_rows": beta.numpy()[data.forget_indices.numpy()]}
    return beta.numpy()


def test_outputs_original_logits_minus_the_forget_weights():
    model, data = make_tiny_problem()
    beta = with_datamodels(data)
    before = weights_of(model)
    original = predict_logits(model, data.eval_x, data.device)
    logits = METHOD.unlearn(model, data, METHOD.defaults)
    expected = original - beta[data.forget_indices.numpy()].sum(axis=0)
    assert logits.shape == (len(data.eval_x), data.n_classes) and logits.dtype == np.float32
    assert np.allclose(logits, expected, atol=1e-5)
    assert not np.allclose(logits, original, atol=0.1)  # the correction is not negligible
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_multiplier_scales_the_correction():
    model, data = make_tiny_problem()
    with_datamodels(data)
    original = predict_logits(model, data.eval_x, data.device)
    full = METHOD.unlearn(model, data, METHOD.defaults)
    half = METHOD.unlearn(model, data, METHOD.defaults | {"multiplier": 0.5})
    assert np.allclose(half - original, 0.5 * (full - original), atol=1e-5)


def test_reads_a_memory_map(tmp_path):
    model, data = make_tiny_problem()
    beta = with_datamodels(data)
    np.save(tmp_path / "rows.npy", beta[data.forget_indices.numpy()])
    expected = METHOD.unlearn(model, data, METHOD.defaults)
    data.extras = {"datamodel_rows": np.load(tmp_path / "rows.npy", mmap_mode="r")}
    assert np.array_equal(METHOD.unlearn(model, data, METHOD.defaults), expected)


def test_refuses_missing_points_or_mismatched_datamodels():
    model, data = make_tiny_problem()
    beta = with_datamodels(data)
    rows = beta[data.forget_indices.numpy()]
    data.extras = {"datamodel_rows": rows[:, :-1]}  # one evaluation point short
    with pytest.raises(ValueError, match="points"):
        METHOD.unlearn(model, data, METHOD.defaults)
    data.extras = {"datamodel_rows": rows[:-1]}  # one forget point short
    with pytest.raises(ValueError, match=r"\|F\|"):
        METHOD.unlearn(model, data, METHOD.defaults)
    data.extras = {"datamodel_rows": beta}  # the whole table, not F's rows
    with pytest.raises(ValueError, match=r"\|F\|"):
        METHOD.unlearn(model, data, METHOD.defaults)
    data.extras = {"datamodel_rows": rows}
    data.eval_x = None
    with pytest.raises(ValueError, match="eval_x"):
        METHOD.unlearn(model, data, METHOD.defaults)


def test_declares_that_it_returns_logits():
    assert METHOD.outputs_logits and METHOD.needs == ("datamodel_rows",) and not METHOD.diagnostic
