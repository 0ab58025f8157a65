"""What every results table's metadata records: config, code and package versions, device,
seeds and the published source (`provenance`). Deterministic on one machine, so rebuilt
tables are identical."""

from __future__ import annotations

import subprocess
from importlib import metadata as package_metadata
from pathlib import Path

import klomflow
from klomflow.config import method_specs, model_seeds, stable_hash
from klomflow.jobs.published import source_provenance

# Packages whose versions every results table records.
PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "torch", "torchvision",
            "snakemake", "matplotlib")



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
    folder = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_versions(specs: dict | None = None) -> dict:
    """klomflow's version and commit, and the versions of its code: training, KLOM, privacy
    and each method of `specs` (default: the built-ins; a user method's is its code's
    fingerprint)."""
    # From the torch- and scipy-free modules: a table job pays no second of imports for these.
    from klomflow import versions
    from klomflow.metrics import klom
    from klomflow.unlearning.methods.registry import REGISTRY

    specs = REGISTRY if specs is None else specs
    return {"klomflow": klomflow.__version__, "git_commit": git_commit(),
            "training_version": versions.TRAINING, "klom_version": klom.VERSION,
            "privacy_version": versions.PRIVACY,
            "method_versions": {name: specs[name].version for name in sorted(specs)}}


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


def provenance(config: dict, base_dir=".") -> dict:
    """Metadata every Parquet file of the paper tables carries (deterministic on one machine).

    `base_dir`: the working folder, where the config's user methods are read."""
    return {"config": config, "config_hash": stable_hash(config, length=16),
            "code_version": code_versions(method_specs(config, base_dir)),
            "packages": package_versions(),
            "device": device_description(), "seeds": seeds_of(config)} | source_provenance(config)
