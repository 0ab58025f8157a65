"""Linear datamodels: how each training point moves every evaluation point's logits.

Ilyas et al. 2022 ("Datamodels: Predicting Predictions from Training Data")
model the output of a network trained on a subset S of the training set as a
linear function of S's indicator vector. Here the output is the full logit
vector of every evaluation point:

    logits(x; S) ~ intercept[x] + sum over i in S of beta[i, x, :]

estimated from M models trained on random 50% subsets (`subset_masks`).
Datamodel matching (Georgiev et al. 2024, "Attribute-to-Delete") predicts
the logits of a model retrained without a forget set F as the original
model's logits minus the summed weights of F (`predicted_logits`).

Estimator (`fit_datamodels`): ridge regression on centred masks, one
regression per output (point, class), all sharing one matrix solve:

    minimise (1/M) ||Yc - Xc beta||^2 + ridge ||beta||^2
    beta = (Xc^T Xc / M + ridge I)^-1 Xc^T Yc / M
         = Xc^T (Xc Xc^T / M + ridge I)^-1 Yc / M      (the dual, used when M < n_train)
    intercept = mean(Y) - mean(X) beta

where X [M, n_train] are the masks, Xc = X - mean(X) and Yc = Y - mean(Y).
The 1/M makes `ridge` independent of the number of models: a random 50%
mask has variance 1/4 per column, so Xc^T Xc / M is about I / 4, and
ridge = 0.25 shrinks a well-determined weight by about half. With ridge = 0
it is least squares (numpy.linalg.lstsq with an intercept column, where the
masks determine every weight; the minimum-norm solution in the centred
masks where they do not).

Every subset_masks row holds the same number k of points, so the data
cannot tell "each point adds c to a logit" from "the intercept is k * c
higher": weights are identified only up to a constant per output. The fit
(ridge, or minimum norm at ridge = 0) returns the weights with mean zero
over training points, so predicted_logits removes F's point-specific
effects, not the effect of training on fewer points.

The authors fit sparse (LASSO) datamodels for CIFAR-10 with tens of
thousands of models; ridge is what a few hundred to a few thousand models
on a small dataset support, and it is one solve. On digits (default MLP,
100 random forget points) the predicted change of the forget points'
margins correlates with the real one (retrained minus original) at about
0.41, 0.62, 0.78 and 0.85 for M = 300, 600, 1000 and 2000 models, best
at ridge 0.01-0.1 (0.03 is a good default).

Storage (written by the fit_datamodels rule, klomflow/training/datamodel_files.py):
the fit never forms beta [n_train, n_points, n_classes] (120 GB at CIFAR-10 scale),
whose rows the methods read only for a forget set. With M < n_train it stores the
dual coefficients A = (Xc Xc^T / M + ridge I)^-1 Yc / M, so that beta = Xc^T A and
F's rows are beta[F] = Xc[:, F]^T A: the masks' columns of F, centred, times A. With
M >= n_train the weights themselves are the smaller table (n_train rows) and are
stored as they are (the primal, an n_train x n_train system, as before). At ridge = 0
both forms keep the minimum-norm, mean-zero weights above (Xc^T (Xc Xc^T)^+ = Xc^+).
The solve runs in float64, A is stored in float32 and the rows are summed in float64:
they equal the fit that stored beta itself to float32 rounding
(tests/test_datamodel_storage.py). Either way a forget set added later needs no refit.
- results/datamodels/coefficients.npy: float32 [K, n_points, n_classes], K = M (the
  dual coefficients, row m = subset model m in seed order) when M < n_train, else
  K = n_train (beta itself). Evaluation points are the training points in
  training-index order, then the validation points (results/data/points.parquet).
- results/datamodels/intercept.npy: float32 [n_points, n_classes].
- results/datamodels/masks/shard_{k}.npy (the subset models' masks, bool
  [models of shard k, n_train]): the X that turns coefficients into rows.
- results/datamodels/rows/{forget_set}.npy (rule compute_datamodel_rows): float32
  [|F|, n_points, n_classes], row k = beta[F[k]] for the sorted indices F of
  results/forget_sets/{forget_set}.npy; what dmm and dm_direct read.
The fit reads the logits in column blocks (datamodel_plan.py states its peak memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klomflow.training.datamodel_plan import (
    BLOCK_BYTES,
    datamodel_fit_plan,
    datamodel_rows_plan,
    kernel_columns,
)

# Bump when a change to the fit can change fitted datamodels (a rerun trigger
# of the fit_datamodels, fit_margin_datamodel and compute_datamodel_rows rules).
# 2: stored as dual coefficients (or weights when M >= n_train), rows per forget set.
VERSION = "2"

# predicted_logits reads F's rows this many elements at a time.
PREDICTION_CHUNK_ELEMENTS = 1 << 24


def subset_masks(n_train: int, n_models: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """bool [n_models, n_train]: row m marks the round(fraction * n_train) points of model m.

    Row m depends only on (seed, m, n_train, fraction), so adding models keeps
    the earlier rows (and the models trained on them) valid.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    size = int(round(fraction * n_train))
    if not 0 < size < n_train:
        raise ValueError(f"a {fraction} subset of {n_train} points is empty or everything")
    masks = np.zeros((n_models, n_train), dtype=bool)
    for model in range(n_models):
        chosen = np.random.default_rng([seed, model]).permutation(n_train)[:size]
        masks[model, chosen] = True
    return masks


def is_dual(n_models: int, n_train: int) -> bool:
    """Whether the fit stores dual coefficients (M < n_train) rather than the weights."""
    return n_models < n_train


@dataclass
class RidgeMap:
    """The fit as linear maps of the centred outputs Yc [M, b] (module docstring):
    stored = coefficient_map @ Yc, intercept = mean(Y) - intercept_map @ Yc.

    coefficient_map: float64 [M, M] (the dual: stored are the coefficients A) or
    [n_train, M] (stored are the weights beta); intercept_map: float64 [M].
    """

    coefficient_map: np.ndarray
    intercept_map: np.ndarray


def ridge_map(
    masks, ridge: float, weights: bool = False, block_bytes: int = BLOCK_BYTES
) -> RidgeMap:
    """The ridge solve of the module docstring, in float64, centred masks built a block at
    a time. Dual coefficients when M < n_train unless `weights`; the weights otherwise."""
    masks = np.asarray(masks, dtype=bool)
    n_models, n_train = masks.shape
    mean = masks.mean(axis=0)  # [n_train]
    if not is_dual(n_models, n_train):
        return _primal_map(masks, mean, ridge, block_bytes)
    step = kernel_columns(n_models, block_bytes)
    kernel = np.zeros((n_models, n_models))  # Xc Xc^T, the dual
    shift = np.zeros(n_models)  # Xc mean: the intercept's share of every model
    for start in range(0, n_train, step):
        centred = masks[:, start : start + step] - mean[start : start + step]  # [M, t]
        kernel += centred @ centred.T
        shift += centred @ mean[start : start + step]
    kernel /= n_models
    values, vectors = np.linalg.eigh(kernel)
    del kernel
    dual = (vectors * _inverse_spectrum(values, ridge)) @ vectors.T / n_models  # [M, M]
    del vectors
    # intercept = mean(Y) - mean @ Xc^T A = mean(Y) - (Xc mean)^T dual Yc; dual is symmetric.
    intercept_map = dual @ shift
    if not weights:
        return RidgeMap(dual, intercept_map)
    projection = np.empty((n_train, n_models))  # Xc^T dual: beta = projection @ Yc
    for start in range(0, n_train, step):
        centred = masks[:, start : start + step] - mean[start : start + step]
        projection[start : start + step] = centred.T @ dual
    return RidgeMap(projection, intercept_map)


def _primal_map(masks, mean, ridge: float, block_bytes: int) -> RidgeMap:
    """M >= n_train: beta = (Xc^T Xc / M + ridge I)^-1 Xc^T Yc / M, Gram matrix n x n."""
    n_models, n_train = masks.shape
    step = kernel_columns(n_train, block_bytes)
    gram = np.zeros((n_train, n_train))
    for start in range(0, n_models, step):
        centred = masks[start : start + step] - mean  # [r, n_train]
        gram += centred.T @ centred
    gram /= n_models
    values, vectors = np.linalg.eigh(gram)
    del gram
    inverse = (vectors * _inverse_spectrum(values, ridge)) @ vectors.T / n_models
    del vectors
    transposed = np.empty((n_models, n_train))  # (Xc inverse): the map, transposed
    for start in range(0, n_models, step):
        transposed[start : start + step] = (masks[start : start + step] - mean) @ inverse
    return RidgeMap(transposed.T, transposed @ mean)


def _inverse_spectrum(values: np.ndarray, ridge: float) -> np.ndarray:
    """1 / (value + ridge), with the null space dropped (pseudo-inverse) when ridge = 0."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    shifted = values + ridge
    # Centring makes the masks rank-deficient by one; eigenvalues at rounding
    # level belong to that null space and would blow up without a ridge.
    tolerance = max(values.max(), 0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(shifted > tolerance, 1.0 / np.where(shifted > tolerance, shifted, 1.0), 0.0)


# read(columns) -> float64 [M, b] outputs; write(columns, float32 [K, b]).
Reader = Callable[[slice], np.ndarray]
Writer = Callable[[slice, np.ndarray], None]


def fit_columns(
    fit: RidgeMap, read: Reader, n_columns: int, write: Writer, block_columns: int
) -> np.ndarray:
    """Apply the fit to the outputs a block of columns at a time; returns the intercept,
    float32 [n_columns]. Only one block of outputs is ever in memory."""
    intercept = np.empty(n_columns, dtype=np.float32)
    for start in range(0, n_columns, block_columns):
        columns = slice(start, min(start + block_columns, n_columns))
        outputs = read(columns)  # float64 [M, b]
        mean = outputs.mean(axis=0)
        outputs -= mean
        intercept[columns] = mean - fit.intercept_map @ outputs
        stored = fit.coefficient_map @ outputs  # [K, b]
        del outputs  # a block's arrays go before the next block's come
        stored_float32 = stored.astype(np.float32)
        del stored
        write(columns, stored_float32)
        del stored_float32
    return intercept


def rows_columns(
    mask_columns, read: Reader, n_columns: int, write: Writer, block_columns: int
) -> None:
    """Write F's rows of beta from dual coefficients, a block of columns at a time:
    rows = (X[:, F] - mean)^T A. mask_columns: bool [M, |F|], the masks' columns of F
    (a column's mean is the fit's mean); read(columns) -> [M, b] of A."""
    loadings = mask_columns - mask_columns.mean(axis=0)  # float64 [M, |F|], Xc[:, F]
    for start in range(0, n_columns, block_columns):
        columns = slice(start, min(start + block_columns, n_columns))
        coefficients = np.asarray(read(columns), dtype=np.float64)  # [M, b]
        rows = loadings.T @ coefficients  # [|F|, b]
        del coefficients  # a block's arrays go before the next block's come
        rows_float32 = rows.astype(np.float32)
        del rows
        write(columns, rows_float32)
        del rows_float32


def fit_datamodels(masks, logits, ridge: float, block_columns: int | None = None):
    """Ridge datamodels in memory (module docstring: the estimator), through the stored
    form and its rows: (beta float32 [n_train, n_points, n_classes], intercept float32
    [n_points, n_classes]). masks: bool [M, n_train]; logits: [M, n_points, n_classes]."""
    masks = np.asarray(masks, dtype=bool)
    n_models, n_train = masks.shape
    if logits.ndim != 3 or len(logits) != n_models:
        raise ValueError(f"logits must be [M={n_models}, n_points, n_classes], got {logits.shape}")
    _, n_points, n_classes = logits.shape
    n_columns = n_points * n_classes
    outputs = logits.reshape(n_models, n_columns)
    block = (
        block_columns or datamodel_fit_plan(n_models, n_train, n_points, n_classes).block_columns
    )
    stored = np.empty((min(n_models, n_train), n_columns), dtype=np.float32)

    def write(columns, values):
        stored[:, columns] = values

    intercept = fit_columns(
        ridge_map(masks, ridge),
        lambda columns: np.array(outputs[:, columns], dtype=np.float64),
        n_columns,
        write,
        block,
    )
    beta = datamodel_rows(stored, masks, np.arange(n_train), block_columns)
    return beta.reshape(n_train, n_points, n_classes), intercept.reshape(n_points, n_classes)


def datamodel_rows(stored, masks, forget_indices, block_columns: int | None = None):
    """F's rows of beta from the stored form, in memory: float32 [|F|, n_columns].
    stored: float32 [K, n_columns] (coefficients or weights); masks: bool [M, n_train]."""
    masks = np.asarray(masks, dtype=bool)
    forget = np.asarray(forget_indices, dtype=np.int64)
    n_models, n_train = masks.shape
    n_columns = stored.shape[1]
    if not is_dual(n_models, n_train):
        return np.asarray(stored[forget], dtype=np.float32)
    rows = np.empty((len(forget), n_columns), dtype=np.float32)
    block = block_columns or datamodel_rows_plan(len(forget), n_columns, 1, n_models).block_columns

    def write(columns, values):
        rows[:, columns] = values

    rows_columns(masks[:, forget], lambda columns: stored[:, columns], n_columns, write, block)
    return rows


def predicted_logits(original_logits, rows, points=None, multiplier: float = 1.0) -> np.ndarray:
    """Datamodel prediction of a model retrained without F: float32 [n_points, C].

    original_logits [n_points, C] minus multiplier * rows.sum(0), where rows
    [|F|, n_points, C] are F's rows of beta (results/datamodels/rows/{forget_set}.npy).
    With `points` (evaluation-point indices), original_logits holds only those
    rows, [len(points), C], and so does the result. `rows` may be a memory map:
    it is read a few rows at a time.
    """
    original_logits = np.asarray(original_logits, dtype=np.float64)
    removed = np.zeros_like(original_logits)
    # A few rows at a time: F's rows of a large dataset need not fit in memory.
    step = max(1, PREDICTION_CHUNK_ELEMENTS // max(1, rows.shape[1] * rows.shape[2]))
    for start in range(0, len(rows), step):
        weights = rows[start : start + step]  # [step, n_points, C]
        if points is not None:
            weights = weights[:, np.asarray(points, dtype=np.int64)]
        removed += np.asarray(weights, dtype=np.float64).sum(axis=0)
    return (original_logits - multiplier * removed).astype(np.float32)


def masks_from_records(records, n_train: int) -> np.ndarray:
    """bool [n_models, n_train] from checkpoint records' `train_indices`."""
    masks = np.zeros((len(records), n_train), dtype=bool)
    for row, record in enumerate(records):
        masks[row, np.asarray(record["train_indices"])] = True
    return masks
