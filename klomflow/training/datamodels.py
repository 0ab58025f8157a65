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

On-disk format (written by the fit_datamodels rule):
- results/datamodels/datamodels.npy: float32 [n_train, n_points, n_classes],
  beta[i, x, c] = weight of training point i on logit c of evaluation point
  x. Evaluation points are the training points in training-index order,
  then the validation points (results/data/points.parquet). A plain .npy,
  so `np.load(path, mmap_mode="r")[forget_indices]` reads only F's rows.
- results/datamodels/intercept.npy: float32 [n_points, n_classes].
"""

from __future__ import annotations

import numpy as np

from klomflow.io import atomic_path, save_array

# Bump when a change to the fit can change fitted datamodels (a rerun trigger
# of the fit_datamodels rule).
VERSION = "1"

# predicted_logits reads F's rows of beta this many elements at a time.
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


def _projection(masks: np.ndarray, ridge: float) -> np.ndarray:
    """H [n_train, M] with beta = H @ Yc: the ridge solution's linear map, in float64."""
    x = masks.astype(np.float64)
    x -= x.mean(axis=0)
    n_models, n_train = x.shape
    if n_models >= n_train:
        gram = x.T @ x / n_models  # [n_train, n_train]
        values, vectors = np.linalg.eigh(gram)
        inverse = _inverse_spectrum(values, ridge)
        return (vectors * inverse) @ (vectors.T @ x.T) / n_models
    kernel = x @ x.T / n_models  # [M, M], the dual
    values, vectors = np.linalg.eigh(kernel)
    inverse = _inverse_spectrum(values, ridge)
    return x.T @ ((vectors * inverse) @ vectors.T) / n_models


def _inverse_spectrum(values: np.ndarray, ridge: float) -> np.ndarray:
    """1 / (value + ridge), with the null space dropped (pseudo-inverse) when ridge = 0."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    shifted = values + ridge
    # Centring makes the masks rank-deficient by one; eigenvalues at rounding
    # level belong to that null space and would blow up without a ridge.
    tolerance = max(values.max(), 0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(shifted > tolerance, 1.0 / np.where(shifted > tolerance, shifted, 1.0), 0.0)


def fit_datamodels(masks, logits, ridge: float, chunk_size: int = 4096, out=None):
    """Ridge datamodels from subset models (module docstring: the estimator).

    masks: bool [M, n_train]; logits: float32 [M, n_points, n_classes] (a
    memory map works). Outputs are processed `chunk_size` (point, class)
    columns at a time, so memory stays at about M * chunk_size floats beyond
    the result. `out` may be a preallocated float32 [n_train, n_points,
    n_classes] array (e.g. np.lib.format.open_memmap) to write beta into.
    Returns (beta float32 [n_train, n_points, n_classes], intercept float32
    [n_points, n_classes]).
    """
    masks = np.asarray(masks, dtype=bool)
    n_models, n_train = masks.shape
    if logits.ndim != 3 or len(logits) != n_models:
        raise ValueError(f"logits must be [M={n_models}, n_points, n_classes], got {logits.shape}")
    _, n_points, n_classes = logits.shape
    outputs = logits.reshape(n_models, n_points * n_classes)
    projection = _projection(masks, ridge)  # [n_train, M]
    mask_mean = masks.mean(axis=0)  # [n_train]
    beta = out if out is not None else np.empty((n_train, n_points, n_classes), np.float32)
    beta_flat = beta.reshape(n_train, n_points * n_classes)
    intercept = np.empty(n_points * n_classes, dtype=np.float32)
    for start in range(0, outputs.shape[1], chunk_size):
        columns = slice(start, start + chunk_size)
        y = np.asarray(outputs[:, columns], dtype=np.float64)  # [M, chunk]
        y_mean = y.mean(axis=0)
        chunk_beta = projection @ (y - y_mean)  # [n_train, chunk]
        beta_flat[:, columns] = chunk_beta
        intercept[columns] = y_mean - mask_mean @ chunk_beta
    return beta, intercept.reshape(n_points, n_classes)


def fit_datamodels_to_files(masks, logits, ridge: float, datamodels_path, intercept_path):
    """fit_datamodels written into datamodels_path (a .npy, atomically) and intercept_path."""
    n_train = np.shape(masks)[1]
    _, n_points, n_classes = logits.shape
    with atomic_path(datamodels_path) as temporary:
        beta = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                         shape=(n_train, n_points, n_classes))
        _, intercept = fit_datamodels(masks, logits, ridge, out=beta)
        beta.flush()
        del beta
    save_array(intercept_path, intercept)
    return intercept


def predicted_logits(original_logits, beta, forget_indices, points=None,
                     multiplier: float = 1.0) -> np.ndarray:
    """Datamodel prediction of a model retrained without F: float32 [n_points, C].

    original_logits [n_points, C] minus multiplier * beta[F].sum(0). With
    `points` (evaluation-point indices), original_logits holds only those
    rows, [len(points), C], and so does the result. `beta` may be a memory
    map: only F's rows are read.
    """
    forget = np.sort(np.asarray(forget_indices, dtype=np.int64))
    original_logits = np.asarray(original_logits, dtype=np.float64)
    removed = np.zeros_like(original_logits)
    # A few rows at a time: F's rows of a large dataset's beta need not fit in memory.
    rows = max(1, PREDICTION_CHUNK_ELEMENTS // max(1, beta.shape[1] * beta.shape[2]))
    for start in range(0, len(forget), rows):
        weights = beta[forget[start:start + rows]]  # [rows, n_points, C]
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
