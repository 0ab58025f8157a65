"""The measured constants and per-unit costs of `klomflow budget`, each with its source.

Every figure names where it comes from: measured here (this machine, the command and the
date), or an assumption to be replaced when a GPU has measured it. Re-measure with
`python benchmarks/budget_units.py` (baselines, matrix products) and
`python benchmarks/job_times.py` on a default run's log (per-unit times on digits).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20

# A job's peak resident memory (ru_maxrss, which every job logs) is its baseline plus its
# allocation plan. Baselines, measured here (`python benchmarks/budget_units.py`,
# 2026-12-07, 2 CPUs, torch 2.14.1+cu130): the steady memory of a job of each kind after
# its imports (probe jobs run as klomflow's, with 400 MB allocated or not):
# numpy/pandas 110 MiB, torch 585 MiB, torch training a model on the CPU 742 MiB. A light
# job's start-up peaks above its steady baseline: 233 MiB measured on klomflow's own light
# jobs whose arrays are under 1 MiB (make_forget_set, gather_original_margins on digits).
# On a GPU node a CUDA context adds host memory (assumption: 1 GiB, to be measured there).
BASELINE = {"numpy": 110 * MiB, "torch": 585 * MiB, "torch_training": 742 * MiB}
LIGHT_START_PEAK = 233 * MiB
CUDA_CONTEXT_BYTES = 1024 * MiB
# Unlearning implementations that train nothing (no optimizer, no backward pass).
NOT_TRAINING = ("do_nothing", "dm_direct")


@dataclass(frozen=True)
class UnitCost:
    seconds: float
    source: str


# Seconds per sample-pass (one training point through one forward and backward pass).
# The digits figures: `python benchmarks/job_times.py` on the default config's cold run
# (snakemake --cores 2, 2026-12-07, this 2-core machine shared with other work, so they
# are on the slow side): train_originals 24 s for 100 models x 10 epochs x 1,437 points;
# compute_klom 31 s over 30 jobs of 300 models x 1,797 points; resample_klom 124 s over
# 26 jobs of 100 resamples x 200 models x 1,797 points.
GPU_ASSUMPTION = "assumption, to be replaced when a GPU has measured it"
MEASURED_DIGITS = "measured here (the default digits run, benchmarks/job_times.py, 2026-12-07)"
SAMPLE_PASS = {
    ("resnet9", "gpu"): UnitCost(
        2.5 / 50_000,
        f"{GPU_ASSUMPTION}: a CIFAR-10 ResNet-9 epoch (50,000 points, batch 256, mixed "
        "precision) in 2.5 s",
    ),
    ("mlp", "cpu"): UnitCost(1.7e-5, f"{MEASURED_DIGITS}: 1.7e-5 s per sample-pass"),
    ("resnet9", "cpu"): UnitCost(2.5 / 50_000 * 100, "assumption: 100x the GPU's rate"),
    ("mlp", "gpu"): UnitCost(1.7e-5, f"assumption: the CPU's rate, {MEASURED_DIGITS}"),
}
# A job's start: interpreter, imports, dataset (docs/performance.md, measured here).
JOB_START = UnitCost(
    3.5, "measured here: import of torch, pandas, pyarrow (docs/performance.md, 2026-12-06)"
)
# float64 matrix products of the datamodel fit on one core.
FLOPS = UnitCost(
    1 / 24e9,
    "measured here: numpy float64 matmul, 24 GFLOP/s on one thread "
    "(python benchmarks/budget_units.py, 2026-12-07)",
)
# Rules whose work is numpy over [models, points] margins: seconds per model-point.
MODEL_POINT = UnitCost(1.9e-6, f"{MEASURED_DIGITS}: compute_klom, 1.9e-6 s per model x point")
# The paper intervals: seconds per resample x model x point.
RESAMPLE_POINT = UnitCost(
    1.3e-7, f"{MEASURED_DIGITS}: resample_klom, 1.3e-7 s per resample x model x point"
)
