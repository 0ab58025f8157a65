"""Files: atomic writes of arrays, checkpoints, texts and Parquet with metadata.

Every write goes to a temporary file in the same folder and is renamed into
place, so a job that dies never leaves a half-written output behind. What a
results table's metadata holds (config, code versions, seeds) is assembled by
klomflow/jobs/provenance.py, the one layer that knows the config.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import klomflow


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_array(path, array) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def npy_bytes(shape, dtype) -> int:
    """Exact size of the .npy file `save_array` writes for an array of `shape` and `dtype`:
    numpy's own header (written to memory by numpy's header writer) plus the data."""
    header = io.BytesIO()
    fields = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # a header over 64 KiB: numpy writes format 2.0
        np.lib.format.write_array_header_2_0(header, fields)
    return len(header.getvalue()) + np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))


def load_array(path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def save_torch(path, payload) -> None:
    import torch  # imported here so that light jobs start without torch

    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_torch(path):
    import torch

    # Checkpoints hold numpy arrays and plain metadata beside tensors.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_text(path, text: str) -> None:
    """Write a text file (a rendered table) atomically."""
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)


def save_parquet(path, frame: pd.DataFrame, metadata: dict | None = None) -> None:
    """Write `frame` with `metadata` (JSON-encoded) in the file's schema metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    stored = dict(table.schema.metadata or {})
    payload = {"klomflow_version": klomflow.__version__} | (metadata or {})
    stored[b"klomflow"] = json.dumps(payload, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(stored)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_parquet_metadata(path) -> dict:
    stored = pq.read_schema(path).metadata or {}
    return json.loads(stored.get(b"klomflow", b"{}"))


def load_logit_groups(groups: dict):
    """`logits_of(key)`: the concatenated logit shards `groups[key]` lists (loaded when
    asked for, one group at a time), or None for a group without logits."""

    def logits_of(key):
        paths = groups.get(key)
        return None if not paths else np.concatenate([load_array(path) for path in paths])

    return logits_of


def shard_ranges(n_models: int, per_job: int) -> list[range]:
    """Model indices of each job: [0, per_job), [per_job, 2 per_job), ..."""
    return [range(start, min(start + per_job, n_models)) for start in range(0, n_models, per_job)]
