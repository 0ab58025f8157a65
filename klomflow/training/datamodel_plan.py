"""What the datamodel rules allocate and write, from the shapes alone (no numpy, no torch).

The fits (klomflow/training/datamodels.py, datamodel_files.py) read the subset models'
logits in column blocks and size each block from `BLOCK_BYTES`; these functions state
their peak memory as formulas of the shapes, so that a budget can be read before a job
runs (planning imports neither numpy nor torch). Each term is an array the code holds at
its peak, in bytes; `PROCESS_BYTES` stands for the interpreter and numpy themselves,
`SMALL_BYTES` for the vectors and Python objects besides the arrays counted, and
`ARRAY_OVERHEAD` for the allocator's and BLAS's share: peak_bytes = PROCESS_BYTES +
ARRAY_OVERHEAD (SMALL_BYTES + the arrays below), a bound of the job's peak RSS.

Notation: M subset models, n training points, P = n_points * n_classes outputs,
m models per shard file, b columns per block, t training columns per block of the
kernel, |F| forget-set size.

- datamodel_fit_plan (rule fit_datamodels), the larger of two phases:
  solve:  M n (masks) + 8 n + max(building + 16 K^2, EIGH_FACTOR 8 K^2) + 8 M R
          (K = min(M, n): the dual kernel M x M, or the primal Gram matrix n x n, summed
          from blocks of centred masks of about BLOCK_BYTES (`building`), each block's
          product beside it; numpy's eigh
          holds its input, a copy, the vectors and LAPACK's 2 K^2 workspace; R rows of a
          kept map: 0 in the dual, n in the primal)
  blocks: 8 M K (the map) + 4 P (intercept) + b max(8 M' + 8 K, 12 K), M' = M + 1
          (a block of outputs in float64 and their mean beside the stored block in
          float64, then that in float64 and float32; the masks are freed before the
          blocks; blocks are read without a memory map, so no mapped page counts)
- margin_datamodel_fit_plan (rule fit_margin_datamodel): as above with R = K = n (the
  weights of the whole margin_train matrix, n x n, are written) and per column
  max(8 M' + 38 m C, 8 M' + 8 n, 12 n): a shard's logits of the block's points read
  (4 m C) and in margins_from_logits' float64 temporaries (34 m C, measured).
- datamodel_rows_plan (rule compute_datamodel_rows): 9 M |F| (F's mask columns, bool and
  centred float64) + b max(8 M + 8 |F|, 12 |F|) (a block of coefficients in float64
  with F's rows in float64 beside it, then those in float64 and float32).
"""

from __future__ import annotations

from dataclasses import dataclass

# Bytes the blocks of a fit may hold at once (the b-terms above); the rest is fixed by
# the shapes. 1 GiB keeps the paper-scale fit near 2 GB and each block's matrix product
# large enough (thousands of columns) for BLAS to run at full speed.
BLOCK_BYTES = 1 << 30

# The process itself: Python, numpy, pandas and pyarrow (klomflow.io), cold: 108 MiB of
# peak RSS measured on 2026-12-07 (`python benchmarks/datamodel_scale.py` prints it). A job
# forked from the warm job server shares that server's pages besides.
PROCESS_BYTES = 120 << 20

# Vectors and Python objects a fit makes besides the arrays the formulas count.
SMALL_BYTES = 1 << 20

# Peak RSS over the arrays counted: the allocator and BLAS besides them. Measured up to
# 1.11 (the peak RSS less the process's, of a 2,000-model fit; benchmarks/datamodel_scale.py,
# 2026-12-07); 1.15 makes the plan a bound.
ARRAY_OVERHEAD = 1.15

# numpy.linalg.eigh of a K x K float64 matrix holds its input, a copy LAPACK works on,
# the eigenvectors and syevd's workspace of 2 K^2: 5 K^2 doubles at its peak.
EIGH_FACTOR = 5

# Bytes per logit of a block while margins_from_logits turns it into margins: the mapped
# float32 logits and its float64 temporaries (34 bytes, measured with tracemalloc).
MARGIN_BYTES_PER_LOGIT = 38

# The .npy header numpy writes (format 1.0, padded to 64 bytes; 128 for these shapes).
NPY_HEADER_BYTES = 128

FLOAT32, FLOAT64 = 4, 8


@dataclass(frozen=True)
class AllocationPlan:
    """peak_bytes: the job's peak memory; written_bytes: output name -> bytes on disk;
    block_columns: output columns per block (b)."""

    peak_bytes: int
    written_bytes: dict
    block_columns: int


def _peak(arrays: int) -> int:
    """The peak RSS bound of a job whose arrays alive at once take `arrays` bytes."""
    return PROCESS_BYTES + int(ARRAY_OVERHEAD * (SMALL_BYTES + arrays))


def block_columns_for(column_bytes: int, n_columns: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Columns per block: as many as fit `block_bytes`, at least 1, at most all."""
    return max(1, min(n_columns, block_bytes // max(1, column_bytes)))


def kernel_columns(length: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Columns (dual: training points; primal: models) per block of centred masks, float64
    [length, t], while the kernel (or Gram matrix) is summed."""
    return max(1, block_bytes // (FLOAT64 * length))


def _solve_bytes(n_models: int, n_train: int, n_rows: int, block_bytes: int) -> int:
    """Peak of the solve: masks, their mean, the kernel (or Gram) and its eigh, and a
    stored map of n_rows x M floats when the fit keeps one ([n_train, M] weights)."""
    size = min(n_models, n_train)
    kernel = FLOAT64 * size * size
    # Centred masks in blocks: [M, t] training columns (dual), [r, n] model rows (primal).
    other = max(n_models, n_train)
    building = FLOAT64 * size * min(kernel_columns(size, block_bytes), other)
    return (
        n_models * n_train
        + FLOAT64 * n_train
        + max(building + 2 * kernel, EIGH_FACTOR * kernel)
        + FLOAT64 * n_models * n_rows
    )


def _npy(*shape: int, itemsize: int) -> int:
    total = itemsize
    for length in shape:
        total *= length
    return NPY_HEADER_BYTES + total


def datamodel_fit_plan(
    n_models: int,
    n_train: int,
    n_points: int,
    n_classes: int,
    block_columns: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> AllocationPlan:
    """fit_datamodels: coefficients [K, n_points, n_classes] float32 (K = M, the dual, when
    M < n_train; else K = n_train, the weights themselves) and the intercept."""
    rows = min(n_models, n_train)
    n_columns = n_points * n_classes
    outputs = FLOAT64 * (n_models + 1)  # and their mean
    column = max(outputs + FLOAT64 * rows, (FLOAT64 + FLOAT32) * rows)
    block = block_columns or block_columns_for(column, n_columns, block_bytes)
    stored_map = 0 if n_models < n_train else n_train  # the primal keeps H [n_train, M]
    solve = _solve_bytes(n_models, n_train, stored_map, block_bytes)
    blocks = FLOAT64 * n_models * rows + FLOAT32 * n_columns + block * column
    written = {
        "coefficients": _npy(rows, n_points, n_classes, itemsize=FLOAT32),
        "intercept": _npy(n_points, n_classes, itemsize=FLOAT32),
    }
    return AllocationPlan(_peak(max(solve, blocks)), written, block)


def margin_datamodel_fit_plan(
    n_models: int,
    n_train: int,
    n_classes: int,
    block_columns: int | None = None,
    models_per_shard: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> AllocationPlan:
    """fit_margin_datamodel: margin_train [n_train, n_train] float32, Θ[i, x]."""
    shard = models_per_shard or n_models
    outputs = FLOAT64 * (n_models + 1)  # and their mean
    column = max(
        outputs + MARGIN_BYTES_PER_LOGIT * shard * n_classes,
        outputs + FLOAT64 * n_train,
        (FLOAT64 + FLOAT32) * n_train,
    )
    block = block_columns or block_columns_for(column, n_train, block_bytes)
    solve = _solve_bytes(n_models, n_train, n_train, block_bytes)
    blocks = FLOAT64 * n_models * n_train + FLOAT32 * n_train + block * column
    written = {"theta": _npy(n_train, n_train, itemsize=FLOAT32)}
    return AllocationPlan(_peak(max(solve, blocks)), written, block)


def datamodel_rows_plan(
    n_forget: int,
    n_points: int,
    n_classes: int,
    n_models: int,
    block_columns: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> AllocationPlan:
    """compute_datamodel_rows: F's rows float32 [|F|, n_points, n_classes] (the dual's
    bound; with M >= n_train the rows are copied from the weights, which takes less)."""
    n_columns = n_points * n_classes
    column = max(FLOAT64 * (n_models + n_forget), (FLOAT64 + FLOAT32) * n_forget)
    block = block_columns or block_columns_for(column, n_columns, block_bytes)
    loadings = (1 + FLOAT64) * n_models * n_forget
    written = {"rows": _npy(n_forget, n_points, n_classes, itemsize=FLOAT32)}
    return AllocationPlan(_peak(loadings + block * column), written, block)
