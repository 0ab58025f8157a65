"""`klomflow budget` against what runs measure, and the SLURM profile against the budget.

The measured side: a small run of the default config's training jobs and one of the
smallest datamodel config (tests/configs/datamodels.yaml), each job's outputs' sizes on
disk and the peak memory its log records (workflow_scripts/workflow_job.py logs
ru_maxrss as its last line). Predictions must be within 20% of both.
"""

import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow import REPOSITORY, SNAKEFILE, snakemake, write_config

from klomflow.data.datasets import load_digits
from klomflow.data.shapes import dataset_shape
from klomflow.io import npy_bytes
from klomflow.jobs.budget import profile_grants
from klomflow.jobs.budget_costs import GPU_RULES
from klomflow.jobs.budget_units import BASELINE
from klomflow.training.plans import model_size

PEAK = re.compile(r"peak memory ([\d.]+) MiB")
TOLERANCE = 0.2
PROFILE = REPOSITORY / "profiles" / "slurm"


def predictions(folder: Path, config_name: str) -> list[dict]:
    """Every planned job's predicted bytes and peak memory, from `klomflow budget`."""
    environment = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])
    )
    command = [
        sys.executable,
        "-m",
        "klomflow.cli",
        "budget",
        "--configfile",
        str(folder / config_name),
        "--workflow",
        str(SNAKEFILE),
        "--jobs-json",
        str(folder / f"{config_name}.jobs.json"),
    ]
    # Digits runs here run every model on the CPU; the paper's prices GPUs.
    command += ["--profile", str(PROFILE)] if config_name.startswith("paper") else ["--no-gpu"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (folder / f"{config_name}.budget.txt").write_text(result.stdout)
    return json.loads((folder / f"{config_name}.jobs.json").read_text())


# --- Shapes without data, model sizes without torch --------------------------------------------


def test_digits_shapes_are_those_the_loader_makes():
    for fraction, seed in [(0.2, 0), (0.35, 7)]:
        dataset = load_digits(fraction, seed)
        shape = dataset_shape({"name": "digits", "val_fraction": fraction, "split_seed": seed})
        assert (shape.n_train, shape.n_val, shape.input_shape) == (
            dataset.n_train,
            len(dataset.val_y),
            dataset.input_shape,
        )


@pytest.mark.parametrize(
    "model_config, input_shape, n_classes",
    [
        ({"name": "mlp", "hidden": [256]}, (64,), 10),
        ({"name": "mlp", "hidden": [16, 7]}, (3, 5, 5), 4),
        ({"name": "resnet9"}, (3, 32, 32), 10),
        ({"name": "resnet9"}, (1, 28, 28), 100),
    ],
)
def test_model_sizes_are_torchs_counts(model_config, input_shape, n_classes):
    from klomflow.training.models import build_model

    model = build_model(model_config, input_shape, n_classes, init_seed=0)
    state = model.state_dict()
    size = model_size(model_config, input_shape, n_classes)
    assert size.parameters == sum(p.numel() for p in model.parameters())
    assert size.tensors == len(state)
    assert size.state_bytes == sum(t.numel() * t.element_size() for t in state.values())


def test_the_published_resnet9_has_its_counted_parameters():
    # PUBLISHED.md: 2,274,880 parameters excluding BN buffers (counted by its authors' model).
    assert model_size({"name": "resnet9"}, (3, 32, 32), 10).parameters == 2_274_880


@pytest.mark.parametrize("dtype", ["int64", "float32", "bool", "float64"])
def test_npy_bytes_are_the_saved_files(dtype):
    # Shapes whose header lengths cross every padding boundary of numpy's 64-byte alignment.
    shapes = [
        (),
        *((n,) for n in range(1, 400, 7)),
        *((n, 1797, 10) for n in (1, 100, 12345)),
        *((n * 1000 + 3, 11, 2) for n in range(1, 200, 13)),
        *((1,) * k for k in range(1, 40)),
        *((2,) + (1,) * k for k in range(1, 22)),
    ]
    for shape in shapes:
        buffer = io.BytesIO()
        zeros = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        np.save(buffer, zeros)
        assert npy_bytes(shape, dtype) == len(buffer.getvalue()), shape


# --- Measured against predicted on digits -------------------------------------------------------


def default_config() -> dict:
    return yaml.safe_load((REPOSITORY / "config.yaml").read_text())


def datamodel_config() -> dict:
    return yaml.safe_load((REPOSITORY / "tests" / "configs" / "datamodels.yaml").read_text())


# The jobs each run measures (and what they need): the default config's training and the
# datamodel config's subset models, fit, a forget set's rows and the datamodel method.
MEASURED = {
    "default": (
        default_config,
        ("prepare_data", "train_originals", "gather_original_margins", "make_forget_set"),
    ),
    "datamodels": (
        datamodel_config,
        ("train_subset_models", "fit_datamodels", "compute_datamodel_rows", "unlearn"),
    ),
}


@pytest.fixture(scope="module")
def measured_runs(tmp_path_factory):
    """{run: (folder, [predicted jobs that ran])}, each run once, without the job server
    (as on a cluster: every job imports its libraries itself)."""
    runs = {}
    for name, (make_config, rules) in MEASURED.items():
        folder = tmp_path_factory.mktemp(name)
        write_config(folder, make_config())
        jobs = [job for job in predictions(folder, "config.yaml") if job["rule"] in rules]
        targets = sorted({path for job in jobs for path in job["outputs"].values()})
        environment = dict(os.environ, KLOMFLOW_JOB_SERVER="off")
        snakemake(folder, "--cores", "2", *targets, environment=environment)
        runs[name] = (folder, jobs)
    return runs


def measured_peak_bytes(folder: Path, job: dict) -> float:
    text = (folder / job["logs"][0]).read_text()
    return float(PEAK.findall(text)[-1]) * (1 << 20)


# The datamodel stage: subset models, the fit, a forget set's rows, a method reading them.
DATAMODEL_RULES = [
    ("datamodels", "train_subset_models"),
    ("datamodels", "fit_datamodels"),
    ("datamodels", "compute_datamodel_rows"),
    ("datamodels", "unlearn"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "run, rule",
    [
        ("default", "prepare_data"),
        ("default", "make_forget_set"),
        ("default", "train_originals"),
        ("default", "gather_original_margins"),
        *DATAMODEL_RULES,
    ],
)
def test_predicted_disk_and_peak_memory_within_20_percent(measured_runs, run, rule):
    folder, jobs = measured_runs[run]
    jobs = [job for job in jobs if job["rule"] == rule]
    assert jobs
    for job in jobs:
        predicted = sum(job["written_bytes"].values())
        on_disk = sum((folder / path).stat().st_size for path in job["outputs"].values())
        assert math.isclose(predicted, on_disk, rel_tol=TOLERANCE), (
            job["outputs"],
            predicted,
            on_disk,
        )
        peak = measured_peak_bytes(folder, job)
        assert math.isclose(job["peak_bytes"], peak, rel_tol=TOLERANCE), (
            job["logs"],
            job["peak_bytes"] / 2**20,
            peak / 2**20,
        )


@pytest.mark.slow
def test_the_datamodel_fit_plan_beyond_the_baseline_within_20_percent(measured_runs):
    """fit_datamodels' arrays (not the interpreter) are most of its memory: its allocation
    plan alone, against its measured peak minus the measured steady baseline."""
    folder, jobs = measured_runs["datamodels"]
    (job,) = [job for job in jobs if job["rule"] == "fit_datamodels"]
    plan = job["peak_bytes"] - BASELINE["numpy"]
    beyond = measured_peak_bytes(folder, job) - BASELINE["numpy"]
    assert plan > BASELINE["numpy"]
    assert math.isclose(plan, beyond, rel_tol=TOLERANCE), (plan / 2**20, beyond / 2**20)


@pytest.mark.slow
@pytest.mark.parametrize("run", MEASURED)
def test_predicted_disk_of_the_whole_measured_run_within_20_percent(measured_runs, run):
    folder, jobs = measured_runs[run]
    predicted = sum(sum(job["written_bytes"].values()) for job in jobs)
    on_disk = sum(
        path.stat().st_size
        for path in (folder / "results").rglob("*")
        if path.is_file() and "logs" not in path.parts
    )
    assert math.isclose(predicted, on_disk, rel_tol=TOLERANCE), (predicted, on_disk)


# --- The SLURM profile grants the paper config what its budget needs -------------------------


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    config = yaml.safe_load((REPOSITORY / "config" / "paper_cifar10.yaml").read_text())
    write_config(folder, config, "paper.yaml")
    jobs = predictions(folder, "paper.yaml")
    return jobs, (folder / "paper.yaml.budget.txt").read_text()


@pytest.mark.slow
def test_the_slurm_profile_grants_every_paper_rule_its_budget(paper_jobs):
    jobs, printed = paper_jobs
    assert "every rule fits what it grants" in printed, printed
    planned = {job["rule"] for job in jobs}
    gpu_rules = set(GPU_RULES) & planned
    assert {"train_originals", "train_oracles", "train_subset_models", "unlearn"} <= gpu_rules
    for rule in planned:
        granted = profile_grants(PROFILE, rule)
        need = max(job["peak_bytes"] for job in jobs if job["rule"] == rule)
        local = f"| {rule} |" in printed and "login node" in next(
            line for line in printed.splitlines() if line.startswith(f"| {rule} |")
        )
        if not local:
            assert granted["mem_mb"] * (1 << 20) >= need, rule
        if rule in gpu_rules:
            assert granted["gpu"] >= 1, rule


def test_profile_resources_are_evaluated_at_attempt_1():
    granted = profile_grants(PROFILE, "prepare_data")
    settings = yaml.safe_load((PROFILE / "config.yaml").read_text())
    default = settings["default-resources"]
    assert granted["mem_mb"] == eval(str(default["mem_mb"]), {}, {"attempt": 1})
    assert profile_grants(PROFILE, "prepare_data", attempt=3)["mem_mb"] == eval(
        str(default["mem_mb"]), {}, {"attempt": 3}
    )
