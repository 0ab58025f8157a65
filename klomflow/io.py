"""Files: atomic writes, self-describing checkpoints and Parquet with provenance.

Every write goes to a temporary file in the same folder and is renamed into
place, so a job that dies never leaves a half-written output behind. Every
results table records its provenance (`provenance`): config, code versions,
package versions, device and seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import klomflow

# Packages whose versions every results table records.
PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "torch", "torchvision",
            "snakemake", "matplotlib")


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


# --- provenance -------------------------------------------------------------------------------


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the klomflow checkout, or None outside a git checkout."""
    folder = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_versions() -> dict:
    # From the torch- and scipy-free modules: a table job pays no second of imports for these.
    from klomflow import klom, versions
    from klomflow.methods.registry import REGISTRY

    return {"klomflow": klomflow.__version__, "git_commit": git_commit(),
            "training_version": versions.TRAINING, "klom_version": klom.VERSION,
            "privacy_version": versions.PRIVACY,
            "method_versions": {name: REGISTRY[name].version for name in sorted(REGISTRY)}}


def device_description() -> dict:
    """Where this table job ran: on the CPU, with numpy.

    Every job that writes a table computes it with numpy and never asks torch
    (importing it costs about 1.5 s; in a local run's warm job the server has
    imported it, so whether it is loaded says nothing): `cuda_available` is
    None, "not asked". The devices that trained and unlearned the models are in
    their checkpoints and run tables.
    """
    import platform

    return {"job_device": "cpu", "platform": platform.platform(),
            "machine": platform.machine(), "cuda_available": None, "cuda_device": None}


def seeds_of(config: dict) -> dict:
    """Every seed behind a results table: models (derived from base_seed), the resamples."""
    from klomflow.config import model_seeds

    models = config["models"]
    n_oracle = models["n_oracles"] + models["n_holdout_oracles"]
    oracles = {}
    for forget_set in sorted(config["forget_sets"]):
        seeds = model_seeds(config, "oracle", forget_set, n_oracle)
        oracles[forget_set] = {"scored": seeds[:models["n_oracles"]],
                               "holdout": seeds[models["n_oracles"]:]}
    return {
        "base_seed": models["base_seed"],
        # -1: a published model (its file and model id are in the source's manifest).
        "original": model_seeds(config, "original", None, models["n_originals"]),
        "oracle": oracles,
        "unlearning": "model_seed(base_seed, 'unlearn', forget_set, method, config_id, index); "
                      "each run's seed is in results/runs/",
        "resample_seed": config["paper"]["resample_seed"],
    }


def provenance(config: dict) -> dict:
    """Metadata every Parquet file of the paper tables carries (deterministic on one machine)."""
    from klomflow.config import stable_hash
    from klomflow.published import source_provenance

    return {"config": config, "config_hash": stable_hash(config, length=16),
            "code_version": code_versions(), "packages": package_versions(),
            "device": device_description(), "seeds": seeds_of(config)} | source_provenance(config)
