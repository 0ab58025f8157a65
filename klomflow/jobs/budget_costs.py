"""What each rule's job costs: one cost function per rule, in one table (`RULE_COSTS`).

A cost function takes the planned job and the run's shapes and returns a `Cost`: the
bytes of every output (exact for arrays, from shape x dtype; estimated for Parquet,
checkpoints' containers and figures, and the estimate says so), the job's peak host
memory (its code's allocation plan beyond the interpreter's baseline, plus that
baseline), and its seconds on a GPU or a CPU from a per-unit cost. Every per-unit cost
names its source: measured here (this machine, the command that measured it), or an
assumption to be replaced once a GPU has measured it.

The datamodel rules' memory and disk are the plans of klomflow/training/datamodel_plan.py,
the bounds the stage itself states (their peak includes the process, which is taken out
here so that the job's own baseline is counted once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from klomflow.data.published.layout import PUBLISHED_FORGET_SETS
from klomflow.data.shapes import DatasetShape
from klomflow.io import npy_bytes
from klomflow.jobs.budget_units import (
    BASELINE,
    CUDA_CONTEXT_BYTES,
    FLOPS,
    JOB_START,
    LIGHT_START_PEAK,
    MODEL_POINT,
    NOT_TRAINING,
    RESAMPLE_POINT,
    SAMPLE_PASS,
    UnitCost,
)
from klomflow.training.datamodel_plan import (
    PROCESS_BYTES,
    datamodel_fit_plan,
    datamodel_rows_plan,
    margin_datamodel_fit_plan,
)
from klomflow.training.plans import ModelSize, Plan, training_plan, unlearning_plan

# Rules that run a model: they need a GPU on a cluster (SLURM profile's `gpu`).
GPU_RULES = (
    "train_originals",
    "train_oracles",
    "train_subset_models",
    "unlearn",
    "derive_forget_set",
    "import_originals",
)
# Rules whose scripts import torch (klomflow.jobs.runs or klomflow.io.save_torch's import).
TORCH_RULES = GPU_RULES + ("prepare_data",)


@dataclass
class Cost:
    written_bytes: dict
    peak_bytes: int
    seconds: float
    on_gpu: bool
    basis: list = field(default_factory=list)  # what is estimated, and each unit's source


@dataclass
class Run:
    """The run a job belongs to: its resolved config, shapes and model size."""

    config: dict
    shape: DatasetShape
    model: ModelSize
    gpu: bool = True  # rules that run models run on GPUs (False: on CPUs, as on digits here)

    def forget_size(self, name: str) -> int:
        spec = self.config["forget_sets"][name]
        if spec["kind"] == "published":
            return PUBLISHED_FORGET_SETS[spec["id"]][0]
        if spec["kind"] == "class":  # balanced classes assumed (CIFAR-10: exactly 5,000)
            return math.ceil(self.shape.n_train / self.shape.n_classes)
        return int(spec.get("size", 100))

    def sample_pass(self, device: str) -> UnitCost:
        return SAMPLE_PASS[(self.config["model"]["name"], device)]


@dataclass
class Job:
    rule: str
    wildcards: dict
    params: dict
    inputs: dict  # name -> path(s), of the named inputs
    outputs: dict  # name -> path
    local: bool
    logs: list = field(default_factory=list)


def _cost(job: Job, run: Run, plan: Plan, seconds: float, basis: list) -> Cost:
    gpu = run.gpu and job.rule in GPU_RULES
    if job.rule not in TORCH_RULES:
        peak = max(LIGHT_START_PEAK, BASELINE["numpy"] + plan.peak_bytes)
    else:
        setting = job.params.get("setting")
        trains = (
            job.rule.startswith("train_")
            or job.rule == "derive_forget_set"
            or (job.rule == "unlearn" and setting.implementation not in NOT_TRAINING)
        )
        if gpu:  # the training state sits in GPU memory
            peak = BASELINE["torch"] + CUDA_CONTEXT_BYTES + plan.peak_bytes
        else:
            peak = BASELINE["torch_training" if trains else "torch"] + plan.peak_bytes
    return Cost(plan.written_bytes, peak, seconds, gpu, basis)


def _shard_size(job: Job, run: Run, role: str) -> int:
    from klomflow.config import shard_indices  # the top layer's helper (no torch)

    return len(shard_indices(run.config, role, int(job.wildcards["shard"])))


def _device(job: Job, run: Run) -> str:
    return "gpu" if run.gpu and job.rule in GPU_RULES else "cpu"


def training(job: Job, run: Run) -> Cost:
    role = {
        "train_originals": "original",
        "train_oracles": "oracle",
        "train_subset_models": "subset",
    }[job.rule]
    shape, n_models = run.shape, _shard_size(job, run, role)
    points = shape.n_train
    if role == "oracle":
        points -= run.forget_size(job.wildcards["forget_set"])
    elif role == "subset":
        points = round(run.config["datamodels"]["subset_fraction"] * shape.n_train)
    plan = training_plan(
        n_models,
        run.model,
        points,
        shape.n_points,
        shape.n_classes,
        shape.input_size,
        on_gpu=run.gpu,
        subset_masks_of=shape.n_train if role == "subset" else 0,
    )
    unit = run.sample_pass(_device(job, run))
    passes = n_models * (run.config["train"]["epochs"] * points + shape.n_points / 3)
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + passes * unit.seconds,
        [f"time: {unit.source}", "checkpoint: tensor bytes exact, container estimated"],
    )


def unlearning(job: Job, run: Run) -> Cost:
    shape, n_models = run.shape, _shard_size(job, run, "original")
    forget = run.forget_size(job.wildcards["forget_set"])
    setting = job.params["setting"]
    rows = datamodel_rows_bytes(forget, shape) if "datamodel_rows" in job.inputs else 0
    plan = unlearning_plan(
        n_models,
        run.model,
        shape.n_train,
        shape.n_points,
        shape.n_classes,
        shape.input_size,
        on_gpu=run.gpu,
        saves_checkpoints=run.config["models"]["save_unlearned_checkpoints"],
        datamodel_rows_bytes=rows,
    )
    epochs = setting.params.get("epochs", 1)
    epochs = max(epochs if isinstance(epochs, (int, float)) else 1, 1)
    unit = run.sample_pass(_device(job, run))
    # Upper estimate: every epoch passes the whole training set; then the logits' pass.
    passes = n_models * (epochs * shape.n_train + shape.n_points / 3)
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + passes * unit.seconds,
        [
            f"time: upper estimate, epochs x n_train sample-passes; {unit.source}",
            "runs Parquet estimated: 2 kB per model and 8 kB",
        ],
    )


def import_originals(job: Job, run: Run) -> Cost:
    n_models = len(job.params["models"])
    plan = Plan(
        2 * n_models * run.model.state_bytes + 2 * run.shape.n_points * run.shape.input_size * 4,
        {
            "checkpoint": n_models
            * (run.model.state_bytes + 400 * run.model.tensors + 4 * run.shape.n_train + 500)
            + 16_000
        },
    )
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + 2.0 * n_models,
        ["time: assumption, 2 s to read and convert a published checkpoint"],
    )


def margins_of(role_models: int, run: Run) -> int:
    return npy_bytes((role_models, run.shape.n_points), "float32")


def gather(job: Job, run: Run) -> Cost:
    models = run.config["models"]
    shape = run.shape
    logits = shape.n_points * shape.n_classes * 4
    if job.rule == "gather_oracle_margins":
        n = models["n_oracles"] + models["n_holdout_oracles"]
        written = {
            "scored": margins_of(models["n_oracles"], run),
            "holdout": margins_of(models["n_holdout_oracles"], run),
        }
    elif job.rule == "gather_holdout_oracle_logits":
        n = models["n_oracles"] + models["n_holdout_oracles"]
        written = {
            "logits": npy_bytes(
                (models["n_holdout_oracles"], shape.n_points, shape.n_classes), "float32"
            )
        }
    else:
        n = models["n_originals"]
        written = {"margins": margins_of(n, run)}
        if "runs" in job.outputs:
            written["runs"] = 2_000 * n + 8_000
    # The logit shards loaded (then concatenated); the margins (float64 while computed).
    plan = Plan(2 * n * logits + 3 * n * shape.n_points * 4, written)
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + n * shape.n_points * MODEL_POINT.seconds,
        [f"time: {MODEL_POINT.source}"],
    )


def per_point_table(job: Job, run: Run) -> Cost:
    """compute_klom, compute_noise_floor, compute_privacy*: per-point Parquet files from
    [models, points] margins (loaded float32; per point in float64)."""
    models = run.config["models"]
    n = models["n_originals"] + models["n_oracles"] + models["n_holdout_oracles"]
    points = run.shape.n_points
    written = {name: 40 * points + 20_000 for name in job.outputs}
    plan = Plan(n * points * 4 + 8 * points * 24, written)
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + n * points * MODEL_POINT.seconds,
        [
            "per-point Parquet estimated: 40 B per point and 20 kB of metadata",
            f"time: {MODEL_POINT.source}",
        ],
    )


def resample(job: Job, run: Run) -> Cost:
    """resample_klom / resample_noise_floor: KLOM recomputed per resample."""
    models = run.config["models"]
    n = models["n_originals"] + models["n_oracles"]
    points = run.shape.n_points
    resamples = run.config["paper"]["resamples"]
    settings = len(job.params.get("resampling", {}).get("config_ids", [None]))
    plan = Plan(settings * n * points * 4 + 4 * n * points * 4, {"intervals": 50_000})
    seconds = (
        JOB_START.seconds
        + settings * n * points * MODEL_POINT.seconds
        + resamples * n * points * RESAMPLE_POINT.seconds
    )
    return _cost(
        job,
        run,
        plan,
        seconds,
        [f"time: {RESAMPLE_POINT.source}", "intervals Parquet estimated at 50 kB"],
    )


def forget_set(job: Job, run: Run) -> Cost:
    size = run.forget_size(job.wildcards["forget_set"])
    plan = Plan(run.shape.n_points * 100, {"indices": npy_bytes((size,), "int64"), "sidecar": 200})
    return _cost(job, run, plan, JOB_START.seconds, ["forget-set sidecar estimated at 200 B"])


def points_table(job: Job, run: Run) -> Cost:
    shape = run.shape
    plan = Plan(2 * shape.n_points * shape.input_size * 4, {"points": 10 * shape.n_points + 5_000})
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + 1e-5 * shape.n_points,
        ["points Parquet estimated: 10 B per point and 5 kB (measured on digits)"],
    )


EXPLORER_PAGE_BYTES = 15_000_000


def small(job: Job, run: Run) -> Cost:
    """Tables, figures, manifests, downloads: small outputs, estimated at 100 kB each."""
    plan = Plan(run.shape.n_points * 200, {name: 100_000 for name in job.outputs})
    return _cost(
        job,
        run,
        plan,
        JOB_START.seconds + 5.0,
        ["outputs estimated at 100 kB each; time: assumption, 5 s"],
    )


def explorer_page(job: Job, run: Run) -> Cost:
    """results/explorer.html: bounded by its design budget, not by the run's size."""
    plan = Plan(run.shape.n_points * 200, {name: EXPLORER_PAGE_BYTES for name in job.outputs})
    return _cost(job, run, plan, JOB_START.seconds + 5.0, [
        "explorer page estimated at its budget, 15 MB (13.6 MB measured at CIFAR-10 scale, "
        "benchmarks/explorer.py, 2026-12-07); memory and time: assumption, as `small`"])


# ---- Datamodel rules (klomflow/training/datamodel_plan.py) -------------------------------------


def _datamodel_cost(job: Job, run: Run, plan, flops: float) -> Cost:
    # The stage's plans bound the whole job's RSS; _cost adds the job's baseline itself.
    beyond_process = Plan(max(0, plan.peak_bytes - PROCESS_BYTES), plan.written_bytes)
    seconds = JOB_START.seconds + flops * FLOPS.seconds
    return _cost(job, run, beyond_process, seconds, [f"time: {FLOPS.source}"])


def fit_datamodels(job: Job, run: Run) -> Cost:
    shape, n_models = run.shape, run.config["datamodels"]["n_subset_models"]
    plan = datamodel_fit_plan(n_models, shape.n_train, shape.n_points, shape.n_classes)
    size = min(n_models, shape.n_train)
    # The kernel (or Gram matrix) over training points, its eigh, then every output column.
    flops = (
        2.0 * size * max(n_models, shape.n_train) * size
        + 10.0 * size**3
        + 2.0 * n_models * size * shape.n_points * shape.n_classes
    )
    return _datamodel_cost(job, run, plan, flops)


def fit_margin_datamodel(job: Job, run: Run) -> Cost:
    n_models, n_train = run.config["datamodels"]["n_subset_models"], run.shape.n_train
    plan = margin_datamodel_fit_plan(n_models, n_train, run.shape.n_classes)
    size = min(n_models, n_train)
    flops = (
        2.0 * size * max(n_models, n_train) * size
        + 10.0 * size**3
        + 2.0 * n_models * size * n_train
    )
    return _datamodel_cost(job, run, plan, flops)


def compute_datamodel_rows(job: Job, run: Run) -> Cost:
    shape, n_models = run.shape, run.config["datamodels"]["n_subset_models"]
    forget = run.forget_size(job.wildcards["forget_set"])
    plan = datamodel_rows_plan(forget, shape.n_points, shape.n_classes, n_models)
    flops = 2.0 * min(n_models, shape.n_train) * forget * shape.n_points * shape.n_classes
    return _datamodel_cost(job, run, plan, flops)


# klomflow.training.datamodels.PREDICTION_CHUNK_ELEMENTS (that module imports torch-free
# numpy only, but planning keeps to the plans' module).
PREDICTION_CHUNK_ELEMENTS = 1 << 24


def datamodel_rows_bytes(forget_size: int, shape: DatasetShape) -> int:
    """Peak bytes of a dmm / dm_direct unlearn job's datamodel rows: F's rows loaded,
    summed PREDICTION_CHUNK_ELEMENTS at a time in float64, into a float64 sum."""
    outputs = shape.n_points * shape.n_classes
    chunk_rows = min(forget_size, max(1, PREDICTION_CHUNK_ELEMENTS // outputs))
    return 4 * forget_size * outputs + 8 * chunk_rows * outputs + 2 * 8 * outputs


# ---- The table ---------------------------------------------------------------------------------

RULE_COSTS = {
    "prepare_data": points_table,
    "make_forget_set": forget_set,
    "derive_forget_set": forget_set,
    "train_originals": training,
    "train_oracles": training,
    "train_subset_models": training,
    "import_originals": import_originals,
    "fit_datamodels": fit_datamodels,
    "fit_margin_datamodel": fit_margin_datamodel,
    "compute_datamodel_rows": compute_datamodel_rows,
    "unlearn": unlearning,
    "gather_original_margins": gather,
    "gather_oracle_margins": gather,
    "gather_unlearned_margins": gather,
    "gather_holdout_oracle_logits": gather,
    "compute_klom": per_point_table,
    "compute_noise_floor": per_point_table,
    "compute_privacy": per_point_table,
    "compute_privacy_reference": per_point_table,
    "resample_klom": resample,
    "resample_noise_floor": resample,
    "build_explorer": explorer_page,
}
# Every other rule (tables, figures, manifests, `all`): `small`.


def job_cost(job: Job, run: Run) -> Cost:
    return RULE_COSTS.get(job.rule, small)(job, run)
