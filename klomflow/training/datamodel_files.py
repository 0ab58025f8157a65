"""The datamodel rules' files: the fits read the subset models' logits from their shard
files a block of columns at a time and write their outputs a block at a time, so memory
follows the block, not the data (klomflow/training/datamodel_plan.py states the peak).

Blocks are read with plain reads, row segment by row segment, straight into the block's
float64 array: no memory map, whose pages (and the kernel's fault-around beside them)
would count in the job's memory. Outputs are written likewise into a preallocated .npy,
under a temporary name renamed into place at the end (klomflow/io.py).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from klomflow.io import atomic_path, save_array
from klomflow.metrics.margins import margins_from_logits
from klomflow.training.datamodel_plan import (
    BLOCK_BYTES,
    datamodel_fit_plan,
    datamodel_rows_plan,
    margin_datamodel_fit_plan,
)
from klomflow.training.datamodels import fit_columns, is_dual, ridge_map, rows_columns


def release_freed_arrays() -> None:
    """Make every large array its own mapping, returned to the system when freed.

    glibc raises its mmap threshold after a large block is freed, and later large blocks
    then come from the heap, where freed memory stays in the process: the peak RSS of a
    fit with 2,000 models was 14% above the arrays alive at once (0.45 against 0.39
    GiB; benchmarks/datamodel_scale.py, 2026-12-07), and with the threshold held at its
    default, 128 KiB, at them. Elsewhere than glibc, nothing changes.
    """
    try:
        ctypes.CDLL(None).mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class NpyColumns:
    """A float32 .npy of `shape` [K, ...] at `path`, written a block of columns of its
    [K, prod(rest)] view at a time (one write per row of the block)."""

    def __init__(self, path, shape):
        self.path, self.rows = path, shape[0]
        self.n_columns = int(np.prod(shape[1:]))
        with open(path, "wb") as handle:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": tuple(int(n) for n in shape),
            }
            np.lib.format.write_array_header_1_0(handle, header)
            self.offset = handle.tell()
            handle.truncate(self.offset + 4 * self.rows * self.n_columns)

    def write(self, columns: slice, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)  # [K, b]
        with open(self.path, "r+b") as handle:
            for row in range(self.rows):
                position = self.offset + 4 * (row * self.n_columns + columns.start)
                os.pwrite(handle.fileno(), values[row].tobytes(), position)


def npy_layout(path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, offset of the data) of a C-ordered .npy file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(handle)
        if fortran_order:
            raise ValueError(f"{path}: a Fortran-ordered array; expected C order")
        return shape, dtype, handle.tell()


def read_columns(path, columns: slice, out: np.ndarray, rows=None) -> None:
    """Columns `columns` of the .npy at `path`, seen as [K, prod(rest)], into `out`
    [len(rows), b] (converted to its dtype); `rows` (default all) picks rows of K."""
    shape, dtype, offset = npy_layout(path)
    n_columns = int(np.prod(shape[1:]))
    rows = range(shape[0]) if rows is None else rows
    segment = np.empty(columns.stop - columns.start, dtype=dtype)
    with open(path, "rb") as handle:
        for position, row in enumerate(rows):
            start = offset + dtype.itemsize * (int(row) * n_columns + columns.start)
            handle.seek(start)
            if handle.readinto(memoryview(segment).cast("B")) != segment.nbytes:
                raise ValueError(f"{path}: shorter than its header says")
            out[position] = segment


def shard_sizes(logit_paths, mask_paths) -> list[int]:
    """Models per shard, checked: each logit shard has as many rows as its mask shard."""
    sizes = []
    for logits, masks in zip(logit_paths, mask_paths, strict=True):
        n_logits, n_masks = npy_layout(logits)[0][0], npy_layout(masks)[0][0]
        if n_logits != n_masks:
            raise ValueError(f"{logits} holds {n_logits} models, {masks} {n_masks}")
        sizes.append(n_logits)
    return sizes


def load_masks(mask_paths) -> np.ndarray:
    """bool [M, n_train]: the shards' masks in seed order."""
    return np.concatenate([np.asarray(np.load(path), dtype=bool) for path in mask_paths])


def logit_columns(logit_paths, n_models: int):
    """read(columns) -> float64 [M, b]: columns of the (point, class) outputs, shard by shard."""

    def read(columns: slice) -> np.ndarray:
        outputs = np.empty((n_models, columns.stop - columns.start))
        row = 0
        for path in logit_paths:
            size = npy_layout(path)[0][0]
            read_columns(path, columns, outputs[row : row + size])
            row += size
        return outputs

    return read


def fit_datamodels_to_files(
    logit_paths,
    mask_paths,
    ridge: float,
    coefficients_path,
    intercept_path,
    block_bytes: int = BLOCK_BYTES,
):
    """The stored datamodels (klomflow/training/datamodels.py) from the shard files:
    coefficients [K, n_points, n_classes] and the intercept. Returns the plan it ran."""
    release_freed_arrays()
    shard_sizes(logit_paths, mask_paths)  # each logit shard beside its mask shard
    masks = load_masks(mask_paths)
    n_models, n_train = masks.shape
    _, n_points, n_classes = npy_layout(logit_paths[0])[0]
    plan = datamodel_fit_plan(n_models, n_train, n_points, n_classes, block_bytes=block_bytes)
    fit = ridge_map(masks, ridge, block_bytes=block_bytes)
    del masks
    with atomic_path(coefficients_path) as temporary:
        stored = NpyColumns(temporary, (min(n_models, n_train), n_points, n_classes))
        intercept = fit_columns(
            fit,
            logit_columns(logit_paths, n_models),
            stored.n_columns,
            stored.write,
            plan.block_columns,
        )
    save_array(intercept_path, intercept.reshape(n_points, n_classes))
    return plan


def forget_mask_columns(mask_paths, forget) -> tuple[np.ndarray, int]:
    """(bool [M, |F|]: the masks' columns of F, n_train), one shard map at a time."""
    columns, n_train = [], None
    for path in mask_paths:
        shard = np.load(path, mmap_mode="r")
        n_train = shard.shape[1]
        columns.append(np.asarray(shard[:, forget], dtype=bool))
        del shard
    return np.concatenate(columns), n_train


def datamodel_rows_to_file(
    coefficients_path, mask_paths, forget_indices, rows_path, block_bytes: int = BLOCK_BYTES
):
    """F's rows of beta, float32 [|F|, n_points, n_classes] at rows_path, row k =
    beta[forget_indices[k]], from the stored datamodels. Returns the plan it ran."""
    release_freed_arrays()
    forget = np.asarray(forget_indices, dtype=np.int64)
    mask_columns, n_train = forget_mask_columns(mask_paths, forget)
    n_models = len(mask_columns)
    n_stored, n_points, n_classes = npy_layout(coefficients_path)[0]
    if n_stored != min(n_models, n_train):
        raise ValueError(
            f"{coefficients_path} holds {n_stored} rows; {n_models} subset models "
            f"of {n_train} training points make {min(n_models, n_train)}"
        )
    if len(forget) and (forget.min() < 0 or forget.max() >= n_train):
        raise ValueError(f"forget indices outside 0..{n_train - 1}")
    plan = datamodel_rows_plan(len(forget), n_points, n_classes, n_models, block_bytes=block_bytes)

    def read(columns: slice) -> np.ndarray:
        rows = None if is_dual(n_models, n_train) else forget  # the weights' rows: F's
        block = np.empty((n_models if rows is None else len(forget), columns.stop - columns.start))
        read_columns(coefficients_path, columns, block, rows)
        return block

    with atomic_path(rows_path) as temporary:
        rows = NpyColumns(temporary, (len(forget), n_points, n_classes))
        if is_dual(n_models, n_train):
            rows_columns(mask_columns, read, rows.n_columns, rows.write, plan.block_columns)
        else:  # the weights are stored: F's rows as they are
            for start in range(0, rows.n_columns, plan.block_columns):
                columns = slice(start, min(start + plan.block_columns, rows.n_columns))
                rows.write(columns, read(columns))
    return plan


def fit_margin_datamodel_to_file(
    logit_paths, mask_paths, train_labels, ridge: float, path, block_bytes: int = BLOCK_BYTES
):
    """Θ [n_train, n_train] float32 at `path`, Θ[i, x] = effect of training point i on
    training point x's margin: the ridge fit (the same masks and ridge as the logit
    datamodels) to the subset models' margins of the training points, computed for a
    block of points x at a time. Returns the plan it ran."""
    release_freed_arrays()
    train_labels = np.asarray(train_labels)
    sizes = shard_sizes(logit_paths, mask_paths)
    masks = load_masks(mask_paths)
    n_models, n_train = masks.shape
    if len(train_labels) != n_train:
        raise ValueError(f"{len(train_labels)} training labels for masks of {n_train} points")
    n_classes = npy_layout(logit_paths[0])[0][2]
    plan = margin_datamodel_fit_plan(
        n_models, n_train, n_classes, models_per_shard=max(sizes), block_bytes=block_bytes
    )
    fit = ridge_map(masks, ridge, weights=True, block_bytes=block_bytes)
    del masks

    def read(columns: slice) -> np.ndarray:
        margins = np.empty((n_models, columns.stop - columns.start))
        row = 0
        points = slice(columns.start * n_classes, columns.stop * n_classes)  # flat columns
        for shard_path in logit_paths:
            size = npy_layout(shard_path)[0][0]
            logits = np.empty((size, points.stop - points.start), dtype=np.float32)
            read_columns(shard_path, points, logits)
            margins[row : row + size] = margins_from_logits(
                logits.reshape(size, -1, n_classes), train_labels[columns]
            )
            del logits
            row += size
        return margins

    with atomic_path(path) as temporary:
        theta = NpyColumns(temporary, (n_train, n_train))
        fit_columns(fit, read, n_train, theta.write, plan.block_columns)
    return plan
