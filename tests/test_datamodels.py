"""Datamodels: subset masks, the ridge fit on a known linear model, predictions."""

import numpy as np
import pytest

from klomflow.training import datamodels
from klomflow.training.datamodels import (
    fit_datamodels,
    masks_from_records,
    predicted_logits,
    subset_masks,
)


def test_subset_masks_are_deterministic_half_subsets():
    masks = subset_masks(101, 40, fraction=0.5, seed=3)
    assert masks.shape == (40, 101) and masks.dtype == bool
    assert (masks.sum(axis=1) == 50).all()  # round(0.5 * 101)
    assert np.array_equal(masks, subset_masks(101, 40, fraction=0.5, seed=3))
    assert not np.array_equal(masks, subset_masks(101, 40, fraction=0.5, seed=4))
    assert len({row.tobytes() for row in masks}) == 40  # rows differ
    # Adding models keeps the earlier rows (and the models trained on them).
    assert np.array_equal(subset_masks(101, 60, 0.5, 3)[:40], masks)
    # Every point is in about half of the subsets.
    assert abs(subset_masks(50, 2000, 0.5, 0).mean(axis=0) - 0.5).max() < 0.05


def test_subset_masks_reject_degenerate_fractions():
    with pytest.raises(ValueError):
        subset_masks(10, 2, fraction=1.0)
    with pytest.raises(ValueError):
        subset_masks(10, 2, fraction=0.01)


def linear_problem(n_models, n_train=30, n_points=7, n_classes=3, noise=0.01, seed=0,
                   fixed_size=False):
    """Masks, logits = intercept + masks @ beta + noise, and the true beta and intercept.

    Masks are Bernoulli(1/2) (sizes vary, so every weight is identified) unless
    `fixed_size`, where they are subset_masks (every row the same size).
    """
    rng = np.random.default_rng(seed)
    if fixed_size:
        masks = subset_masks(n_train, n_models, 0.5, seed)
    else:
        masks = rng.random((n_models, n_train)) < 0.5
    beta = rng.normal(size=(n_train, n_points, n_classes))
    intercept = rng.normal(size=(n_points, n_classes))
    logits = intercept + np.einsum("mn,npc->mpc", masks.astype(float), beta)
    logits += noise * rng.normal(size=logits.shape)
    return masks, logits.astype(np.float32), beta, intercept


@pytest.mark.parametrize("block_columns", [5, 4096])
def test_fit_recovers_a_known_linear_model(block_columns):
    masks, logits, beta, intercept = linear_problem(n_models=400)
    fitted, fitted_intercept = fit_datamodels(masks, logits, ridge=1e-4,
                                              block_columns=block_columns)
    assert fitted.shape == beta.shape and fitted.dtype == np.float32
    assert fitted_intercept.shape == intercept.shape
    assert np.abs(fitted - beta).max() < 0.02
    assert np.abs(fitted_intercept - intercept).max() < 0.05


def test_fixed_size_subsets_identify_weights_up_to_their_mean():
    # Every subset holds k points, so adding c to every weight and subtracting
    # k * c from the intercept fits equally well: the fit returns the weights
    # with mean zero over training points (ridge and minimum norm both do).
    masks, logits, beta, intercept = linear_problem(n_models=400, fixed_size=True)
    fitted, fitted_intercept = fit_datamodels(masks, logits, ridge=1e-4)
    mean = beta.mean(axis=0)
    assert np.abs(fitted - (beta - mean)).max() < 0.02
    assert np.abs(fitted_intercept - (intercept + 15 * mean)).max() < 0.05
    assert np.abs(fitted.mean(axis=0)).max() < 1e-5


def test_ridge_zero_matches_lstsq_with_an_intercept_column():
    masks, logits, _, _ = linear_problem(n_models=80, noise=0.5)
    fitted, intercept = fit_datamodels(masks, logits, ridge=0.0)
    design = np.column_stack([np.ones(len(masks)), masks.astype(float)])
    solution = np.linalg.lstsq(design, logits.reshape(len(masks), -1).astype(float), rcond=None)[0]
    assert np.allclose(fitted.reshape(masks.shape[1], -1), solution[1:], atol=1e-4)
    assert np.allclose(intercept.ravel(), solution[0], atol=1e-4)


def test_dual_solve_matches_lstsq_minimum_norm_when_models_are_few():
    masks, logits, _, _ = linear_problem(n_models=12, noise=0.5)  # 12 models < 30 points
    fitted, _ = fit_datamodels(masks, logits, ridge=0.0)
    centred = masks - masks.mean(axis=0)
    outputs = logits.reshape(12, -1).astype(float)
    solution = np.linalg.lstsq(centred, outputs - outputs.mean(axis=0), rcond=None)[0]
    assert np.allclose(fitted.reshape(30, -1), solution, atol=1e-4)


@pytest.mark.parametrize("n_models", [29, 31])  # dual (fewer models than points), primal
def test_solves_match_the_ridge_formula(n_models):
    masks, logits, _, _ = linear_problem(n_models=n_models, noise=0.5)
    fitted, intercept = fit_datamodels(masks, logits, ridge=0.3)
    x = masks.astype(float)
    x -= x.mean(axis=0)
    y = logits.reshape(n_models, -1).astype(float)
    direct = np.linalg.solve(x.T @ x / n_models + 0.3 * np.eye(30),
                             x.T @ (y - y.mean(axis=0)) / n_models)
    assert np.allclose(fitted.reshape(30, -1), direct, atol=1e-4)
    expected_intercept = y.mean(axis=0) - masks.mean(axis=0) @ direct
    assert np.allclose(intercept.ravel(), expected_intercept, atol=1e-4)


def test_ridge_shrinks_the_weights():
    masks, logits, _, _ = linear_problem(n_models=200)
    small, _ = fit_datamodels(masks, logits, ridge=1e-4)
    large, _ = fit_datamodels(masks, logits, ridge=1.0)
    assert np.linalg.norm(large) < 0.5 * np.linalg.norm(small)


@pytest.mark.parametrize("chunk_elements", [1, 1 << 24])  # a row at a time, all at once
def test_predicted_logits_subtract_the_forget_rows(chunk_elements, monkeypatch):
    monkeypatch.setattr(datamodels, "PREDICTION_CHUNK_ELEMENTS", chunk_elements)
    rng = np.random.default_rng(0)
    beta = rng.normal(size=(6, 9, 3)).astype(np.float32)
    original = rng.normal(size=(9, 3)).astype(np.float32)
    forget = np.array([4, 1, 5])
    expected = original - beta[1] - beta[4] - beta[5]
    rows = beta[forget]  # F's rows, as results/datamodels/rows/{forget_set}.npy holds them
    assert np.allclose(predicted_logits(original, rows), expected, atol=1e-6)
    points = np.array([0, 5, 7])
    assert np.allclose(predicted_logits(original[points], rows, points=points),
                       expected[points], atol=1e-6)
    assert np.allclose(predicted_logits(original, rows, multiplier=0.0), original)


def test_masks_from_records():
    records = [{"train_indices": np.array([0, 2])}, {"train_indices": np.array([1])}]
    assert masks_from_records(records, 3).tolist() == [[True, False, True], [False, True, False]]
