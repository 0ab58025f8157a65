"""The stored datamodels (dual coefficients, or the weights when M >= n_train) and the rows
made from them equal the fit as it was before they were stored so (a re-statement below,
the independent route): on digits, at ridge > 0 and ridge = 0, with fewer and with more
models than training points. The fit streams its inputs in column blocks: a streamed fit
equals a one-block fit, its memory stays within its plan, and a forget set added to a
finished run computes its rows without refitting."""

import tracemalloc

import numpy as np
import pytest
from workflow import planned_jobs, snakemake, tiny_config, write_config

from klomflow.data.datasets import digits_arrays, digits_split
from klomflow.io import load_array
from klomflow.metrics.margins import margins_from_logits
from klomflow.training import datamodel_plan
from klomflow.training.datamodel_files import (
    datamodel_rows_to_file,
    fit_datamodels_to_files,
    fit_margin_datamodel_to_file,
)
from klomflow.training.datamodels import subset_masks


def inverse_spectrum(values, ridge):
    shifted = values + ridge
    tolerance = max(values.max(), 0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(shifted > tolerance, 1.0 / np.where(shifted > tolerance, shifted, 1.0), 0.0)


def todays_fit(masks, logits, ridge):
    """The fit as it stood before the dual storage (klomflow 2026-12-07), restated: the
    whole beta [n_train, n_outputs] from the projection H = Xc^T (Xc Xc^T/M + ridge I)^-1 / M
    (M < n_train) or (Xc^T Xc/M + ridge I)^-1 Xc^T / M, in float64, stored in float32."""
    x = masks.astype(np.float64)
    x -= x.mean(axis=0)
    n_models, n_train = x.shape
    if n_models >= n_train:
        values, vectors = np.linalg.eigh(x.T @ x / n_models)
        projection = (vectors * inverse_spectrum(values, ridge)) @ (vectors.T @ x.T) / n_models
    else:
        values, vectors = np.linalg.eigh(x @ x.T / n_models)
        projection = x.T @ ((vectors * inverse_spectrum(values, ridge)) @ vectors.T) / n_models
    outputs = logits.reshape(n_models, -1).astype(np.float64)
    mean = outputs.mean(axis=0)
    beta = projection @ (outputs - mean)
    intercept = mean - masks.mean(axis=0) @ beta
    return beta.astype(np.float32), intercept.astype(np.float32)


# Digits' first 300 training points (as test_datamodels_quality.py), so that both forms run
# in seconds: 200 models store the dual coefficients, 400 the weights.
N_TRAIN = 300


def digits_subset_logits(n_models, seed=0):
    """Masks [M, N_TRAIN] over digits' first N_TRAIN training points and the logits
    [M, n_points, 10] of a ridge-regression classifier (one-hot targets on the pixels)
    trained on each subset; points are those training points, then the validation points,
    as the workflow orders them."""
    pixels, labels = digits_arrays()
    train, val = digits_split(len(labels), 0.2, 0)
    train = train[:N_TRAIN]
    features = np.column_stack([pixels / 16.0, np.ones(len(pixels))])
    x, targets = features[train], np.eye(10)[labels[train]]
    masks = subset_masks(N_TRAIN, n_models, 0.5, seed)
    chosen = masks.astype(np.float64)
    gram = np.einsum("mi,ij,ik->mjk", chosen, x, x) + np.eye(x.shape[1])
    weights = np.linalg.solve(gram, np.einsum("mi,ij,ik->mjk", chosen, x, targets))
    points = features[np.concatenate([train, val])]
    logits = np.einsum("pj,mjk->mpk", points, weights).astype(np.float32)
    return masks, logits, labels[train]


def write_shards(folder, masks, logits, per_shard):
    """The workflow's layout: results/logits/subset/shard_k.npy, .../masks/shard_k.npy."""
    logit_paths, mask_paths = [], []
    for shard, start in enumerate(range(0, len(masks), per_shard)):
        rows = slice(start, start + per_shard)
        logit_paths.append(folder / f"logits_shard_{shard}.npy")
        mask_paths.append(folder / f"masks_shard_{shard}.npy")
        np.save(logit_paths[-1], logits[rows])
        np.save(mask_paths[-1], masks[rows])
    return logit_paths, mask_paths


@pytest.fixture(scope="module", params=[200, 400], ids=["dual", "primal"])
def digits_shards(request, tmp_path_factory):
    """200 models (< N_TRAIN training points: dual coefficients) or 400 (the weights)."""
    folder = tmp_path_factory.mktemp(f"digits_{request.param}")
    masks, logits, labels = digits_subset_logits(request.param)
    return folder, masks, logits, labels, *write_shards(folder, masks, logits, per_shard=150)


def forget_sets(labels):
    rng = np.random.default_rng(5)
    return {"one point": np.array([17]),
            "random 30": np.sort(rng.choice(len(labels), 30, replace=False)),
            "class 3": np.flatnonzero(labels == 3)}


@pytest.mark.parametrize("ridge", [0.03, 0.0])
def test_rows_from_the_stored_fit_equal_todays_fit_on_digits(digits_shards, ridge):
    folder, masks, logits, labels, logit_paths, mask_paths = digits_shards
    expected, expected_intercept = todays_fit(masks, logits, ridge)
    # Small blocks: many column blocks in the fit and in the rows.
    plan = fit_datamodels_to_files(logit_paths, mask_paths, ridge, folder / "coefficients.npy",
                                   folder / "intercept.npy", block_bytes=4 << 20)
    assert plan.block_columns < logits.shape[1] * logits.shape[2] // 4
    stored = np.load(folder / "coefficients.npy", mmap_mode="r")
    assert stored.shape == (min(masks.shape), *logits.shape[1:]) and stored.dtype == np.float32
    scale = np.abs(expected).max()
    for name, forget in forget_sets(labels).items():
        datamodel_rows_to_file(folder / "coefficients.npy", mask_paths, forget,
                               folder / "rows.npy", block_bytes=1 << 20)
        rows = load_array(folder / "rows.npy")
        assert rows.shape == (len(forget), *logits.shape[1:]) and rows.dtype == np.float32
        # float32 storage of A, then a sum over M models: relative error ~1e-7 of beta's scale.
        np.testing.assert_allclose(rows.reshape(len(forget), -1), expected[forget], rtol=0,
                                   atol=1e-5 * scale, err_msg=name)
    np.testing.assert_allclose(load_array(folder / "intercept.npy").ravel(), expected_intercept,
                               rtol=0, atol=1e-5 * np.abs(expected_intercept).max())


def synthetic_shards(folder, n_models=60, n_train=90, n_points=110, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    masks = subset_masks(n_train, n_models, 0.5, seed)
    logits = rng.normal(size=(n_models, n_points, n_classes)).astype(np.float32)
    logits[:, :, 0] += masks.astype(np.float32) @ rng.normal(size=(n_train, n_points))
    return masks, logits, *write_shards(folder, masks, logits, per_shard=25)


@pytest.mark.parametrize("n_models", [60, 120])  # dual, primal
def test_a_streamed_fit_equals_a_one_block_fit(tmp_path, n_models):
    masks, logits, logit_paths, mask_paths = synthetic_shards(tmp_path, n_models=n_models)
    outputs = {}
    for name, block_bytes in (("streamed", 1 << 13), ("one block", 1 << 40)):
        plan = fit_datamodels_to_files(logit_paths, mask_paths, 0.1, tmp_path / f"{name}.npy",
                                       tmp_path / f"{name}_intercept.npy", block_bytes)
        assert (plan.block_columns < 20) == (name == "streamed")
        outputs[name] = load_array(tmp_path / f"{name}.npy"), load_array(
            tmp_path / f"{name}_intercept.npy")
    for streamed, whole in zip(outputs["streamed"], outputs["one block"]):
        np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-7 * np.abs(whole).max())


@pytest.mark.parametrize("n_models", [60, 120])  # the dual's kernel, the primal's Gram
def test_the_margin_datamodel_streams_to_todays_fit(tmp_path, n_models):
    masks, logits, logit_paths, mask_paths = synthetic_shards(tmp_path, n_models=n_models)
    labels = np.random.default_rng(1).integers(0, 4, masks.shape[1])
    margins = margins_from_logits(logits[:, :masks.shape[1]], labels)
    expected, _ = todays_fit(masks, margins[:, :, None], 0.03)
    plan = fit_margin_datamodel_to_file(logit_paths, mask_paths, labels, 0.03,
                                        tmp_path / "theta.npy", block_bytes=1 << 14)
    assert plan.block_columns < masks.shape[1] // 4
    theta = load_array(tmp_path / "theta.npy")
    np.testing.assert_allclose(theta, expected.reshape(theta.shape), rtol=0,
                               atol=1e-5 * np.abs(expected).max())


def test_a_fit_allocates_within_its_plan(tmp_path):
    """numpy's allocations (tracemalloc sees them) stay under the plan less the process
    itself, and well under the logits it streams: the plan is a bound, and a tight one."""
    n_models, n_train, n_points, n_classes = 200, 700, 900, 10
    masks, logits, logit_paths, mask_paths = synthetic_shards(
        tmp_path, n_models, n_train, n_points, n_classes)
    block_bytes = 1 << 20
    plan = datamodel_plan.datamodel_fit_plan(n_models, n_train, n_points, n_classes,
                                             block_bytes=block_bytes)
    tracemalloc.start()
    try:
        fit_datamodels_to_files(logit_paths, mask_paths, 0.1, tmp_path / "c.npy",
                                tmp_path / "i.npy", block_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    overhead = datamodel_plan.ARRAY_OVERHEAD
    allocated = ((plan.peak_bytes - datamodel_plan.PROCESS_BYTES) / overhead
                 - datamodel_plan.SMALL_BYTES)  # the arrays the plan counts
    assert 0.8 * allocated < peak <= allocated + datamodel_plan.SMALL_BYTES, (peak, allocated)
    assert peak < logits.nbytes / 2  # streamed: never the whole input
    assert plan.written_bytes["coefficients"] == (tmp_path / "c.npy").stat().st_size
    assert plan.written_bytes["intercept"] == (tmp_path / "i.npy").stat().st_size


def test_the_paper_scale_plans_fit_16_gb():
    """config/paper_cifar10.yaml's shapes: 5,000 subset models, 50,000 training points,
    60,000 points, 10 classes, 50 models per shard; the rows of its 5,000-point class."""
    fit = datamodel_plan.datamodel_fit_plan(5000, 50000, 60000, 10)
    margin = datamodel_plan.margin_datamodel_fit_plan(5000, 50000, 10, models_per_shard=50)
    rows = datamodel_plan.datamodel_rows_plan(5000, 60000, 10, 5000)
    for plan in (fit, margin, rows):
        assert plan.peak_bytes <= 16e9, plan
    assert fit.written_bytes["coefficients"] == 128 + 4 * 5000 * 60000 * 10  # 12 GB, not 120
    assert rows.written_bytes["rows"] == 128 + 4 * 5000 * 60000 * 10


@pytest.mark.slow
def test_a_forget_set_added_later_computes_its_rows_without_a_refit(tmp_path):
    config = tiny_config()
    config["methods"] = {"do_nothing": None, "dm_direct": None}
    config["datamodels"] = {"n_subset_models": 6, "seeds_per_job": 3, "ridge": 0.1}
    write_config(tmp_path, config)
    snakemake(tmp_path, "--cores", "2", "results/datamodels/rows/random_30.npy")
    # The workflow's rows are the re-stated fit's rows of the run's own subset models.
    shards = [tmp_path / f"results/logits/subset/shard_{k}.npy" for k in range(2)]
    masks = np.concatenate([load_array(tmp_path / f"results/datamodels/masks/shard_{k}.npy")
                            for k in range(2)])
    beta, _ = todays_fit(masks, np.concatenate([load_array(path) for path in shards]), 0.1)
    forget = load_array(tmp_path / "results/forget_sets/random_30.npy")
    rows = load_array(tmp_path / "results/datamodels/rows/random_30.npy")
    np.testing.assert_allclose(rows.reshape(len(forget), -1), beta[forget], rtol=0,
                               atol=1e-5 * np.abs(beta).max())
    config["forget_sets"]["random_40"] = {"kind": "random", "size": 40, "seed": 2}
    write_config(tmp_path, config, "more.yaml")
    jobs = planned_jobs(tmp_path, "more.yaml", "results/datamodels/rows/random_40.npy")
    assert jobs == {"make_forget_set": 1, "compute_datamodel_rows": 1}, jobs
    # The whole run: dm_direct reads the rows of class_5 and random_40; still no refit.
    jobs = planned_jobs(tmp_path, "more.yaml")
    assert "fit_datamodels" not in jobs and jobs["compute_datamodel_rows"] == 2, jobs
