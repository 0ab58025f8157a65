"""The allocation plans of TODAY's datamodel stage (klomflow/training/datamodels.py:
datamodels.npy, float32 [n_train, n_points, n_classes]), torch-free, for `klomflow budget`.

Temporary by design: the rewritten stage brings klomflow/training/datamodel_plan.py with
plans of the same names and the same result (an object with `peak_bytes` and
`written_bytes`, output name -> bytes); at that merge this file goes and
klomflow/jobs/budget_costs.py imports from that one instead (one import line).
Peak bytes are beyond the interpreter's baseline.
"""

from __future__ import annotations

from klomflow.io import npy_bytes
from klomflow.training.plans import Plan

CHUNK_COLUMNS = 4096  # fit_datamodels' chunk_size
PREDICTION_CHUNK_ELEMENTS = 1 << 24  # datamodels.PREDICTION_CHUNK_ELEMENTS


def _fit(n_models: int, n_train: int, n_outputs: int, inputs_bytes: int) -> tuple[int, float]:
    """(peak bytes, flops) of datamodels.fit_datamodels writing into a memory map."""
    # _projection: the centred masks and H [n_train, M] in float64; the M x M kernel, its
    # eigenvectors and the product of eigh's output.
    projection = 8 * n_models * n_train * 2 + 8 * n_models * n_models * 3
    chunk = min(CHUNK_COLUMNS, n_outputs)
    chunks = 8 * (2 * n_models * chunk + n_train * chunk)  # y, y - mean, beta's chunk
    # The memory-mapped output's written pages count in the job's RSS (file-backed: the
    # kernel may write them back and drop them under a memory limit).
    output = 4 * n_train * n_outputs
    flops = 2.0 * n_train * n_models * n_outputs + 2.0 * n_models**2 * n_train + 10 * n_models**3
    return inputs_bytes + projection + chunks + output, flops


def datamodel_fit_plan(n_models: int, n_train: int, n_points: int, n_classes: int) -> Plan:
    """The fit_datamodels job: every subset model's logits concatenated in memory."""
    logits = 4 * n_models * n_points * n_classes
    peak, flops = _fit(n_models, n_train, n_points * n_classes, logits)
    # np.concatenate of the shards: the shards and the whole, before the fit starts.
    written = {
        "datamodels": npy_bytes((n_train, n_points, n_classes), "float32"),
        "intercept": npy_bytes((n_points, n_classes), "float32"),
    }
    return Plan(max(peak, 2 * logits), written, flops)


def margin_datamodel_fit_plan(n_models: int, n_train: int) -> Plan:
    """The fit_margin_datamodel job: the subset models' training margins and masks."""
    peak, flops = _fit(n_models, n_train, n_train, 4 * n_models * n_train + n_models * n_train)
    return Plan(peak, {"theta": npy_bytes((n_train, n_train), "float32")}, flops)


def datamodel_rows_plan(forget_size: int, n_points: int, n_classes: int) -> Plan:
    """What dmm / dm_direct read of datamodels.npy in their unlearn job: F's rows through
    a memory map (their touched pages count in the job's RSS), PREDICTION_CHUNK_ELEMENTS
    at a time in float64 too, into a float64 sum. Today no rule writes rows."""
    outputs = n_points * n_classes
    chunk_rows = min(forget_size, max(1, PREDICTION_CHUNK_ELEMENTS // outputs))
    return Plan(4 * forget_size * outputs + 8 * chunk_rows * outputs + 2 * 8 * outputs, {})
