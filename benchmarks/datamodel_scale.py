"""Benchmark: the datamodel fit at growing sizes, extrapolated to the paper's.

Run by hand: `python benchmarks/datamodel_scale.py` (`--quick` for the two smallest sizes).
For each size (M subset models x n_train training points; n_points = 1.2 n_train
evaluation points, 10 classes, as CIFAR-10's 50,000 + 10,000) it writes synthetic subset
logits and masks as shard files in the workflow's layout (results/logits/subset/shard_k.npy,
results/datamodels/masks/shard_k.npy, 50 models a shard as config/paper_cifar10.yaml),
then, each in a child process of its own, runs the rule fit_datamodels' code
(klomflow.training.datamodel_files.fit_datamodels_to_files) and compute_datamodel_rows'
for a forget set of 100 points, and reports their wall time and peak RSS (the child's
ru_maxrss) beside the peak that klomflow/training/datamodel_plan.py predicts.

It then fits time = a * M^alpha * P^beta (P = n_points * n_classes outputs) by least
squares on the logarithms, and, as a second model, time = M^2 (P + n_train) / rate (the
fit's multiply-adds: the kernel M^2 n_train and the blocks M^2 P) with the median rate of
the sizes; it extrapolates both to the paper's shapes (M = 5,000, n_train = 50,000,
n_points = 60,000, C = 10), and the peak memory from the plan scaled by the largest
measured/predicted ratio. The blocks use `--block-mib` (default 256 MiB, so
that the larger sizes here run in several blocks; the rule uses BLOCK_BYTES, 1 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from klomflow.training import datamodel_plan  # noqa: E402
from klomflow.training.datamodels import subset_masks  # noqa: E402

# (M subset models, n_train training points), growing in both.
SIZES = [(250, 2500), (500, 2500), (1000, 2500), (500, 5000), (1000, 5000), (2000, 5000),
         (1000, 10000), (2000, 10000)]
PAPER = {"n_models": 5000, "n_train": 50000, "n_points": 60000, "n_classes": 10}
N_CLASSES, MODELS_PER_SHARD, N_FORGET = 10, 50, 100

CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from klomflow.training.datamodel_files import datamodel_rows_to_file, fit_datamodels_to_files
job, folder, block_bytes, n_forget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shards = Path(folder).glob("results/logits/subset/shard_*.npy")
logits = sorted(shards, key=lambda p: int(p.stem[6:]))
masks = [Path(folder) / "results/datamodels/masks" / p.name for p in logits]
started = time.perf_counter()
if job == "fit":
    plan = fit_datamodels_to_files(logits, masks, 0.03, Path(folder) / "coefficients.npy",
                                   Path(folder) / "intercept.npy", block_bytes)
elif job == "rows":
    forget = np.arange(0, np.load(masks[0], mmap_mode="r").shape[1], 7)[:n_forget]
    plan = datamodel_rows_to_file(Path(folder) / "coefficients.npy", masks, forget,
                                  Path(folder) / "rows.npy", block_bytes)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"seconds": seconds, "peak_rss": peak,
                              "block_columns": plan.block_columns}))
"""


def write_shards(folder: Path, n_models: int, n_train: int, n_points: int, seed=0) -> None:
    """Synthetic subset logits (noise plus the effect of the first 100 training points on
    class 0) and masks."""
    rng = np.random.default_rng(seed)
    masks = subset_masks(n_train, n_models, 0.5, seed)
    effects = rng.normal(0, 0.1, size=(100, n_points)).astype(np.float32)
    (folder / "results/logits/subset").mkdir(parents=True)
    (folder / "results/datamodels/masks").mkdir(parents=True)
    for shard, start in enumerate(range(0, n_models, MODELS_PER_SHARD)):
        rows = masks[start:start + MODELS_PER_SHARD]
        logits = rng.standard_normal((len(rows), n_points, N_CLASSES), dtype=np.float32)
        logits[:, :, 0] += rows[:, :100].astype(np.float32) @ effects
        np.save(folder / f"results/logits/subset/shard_{shard}.npy", logits)
        np.save(folder / f"results/datamodels/masks/shard_{shard}.npy", rows)


def run_child(job: str, folder: Path, block_bytes: int) -> dict:
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY),
                       OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", CHILD, job, str(folder), str(block_bytes),
                             str(N_FORGET)],
                            capture_output=True, text=True, env=environment, check=True)
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def baseline_rss() -> int:
    """Peak RSS of a child that imports what the fit imports and does nothing."""
    code = ("import resource, klomflow.training.datamodel_files\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPOSITORY)), check=True)
    return int(result.stdout.strip())


def fit_power_law(rows) -> tuple[float, float, float]:
    """(log a, alpha, beta) of seconds = a * M^alpha * P^beta, least squares on logs."""
    design = np.array([[1.0, np.log(row["M"]), np.log(row["P"])] for row in rows])
    target = np.log([row["fit_seconds"] for row in rows])
    return tuple(np.linalg.lstsq(design, target, rcond=None)[0])


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest sizes only")
    parser.add_argument("--block-mib", type=int, default=256)
    arguments = parser.parse_args()
    block_bytes = arguments.block_mib << 20
    sizes = SIZES[:2] if arguments.quick else SIZES
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"one BLAS thread per child; blocks of {arguments.block_mib} MiB")
    print(f"baseline (python + numpy + klomflow, no fit): peak RSS "
          f"{baseline_rss() / 2**20:.0f} MiB; the plan counts PROCESS_BYTES = "
          f"{datamodel_plan.PROCESS_BYTES >> 20} MiB")
    rows = []
    header = ("| M | n_train | P = n_points x C | input GiB | blocks | fit s | fit peak RSS GiB "
              "| plan GiB | rows of 100 points s | rows peak RSS GiB | rows plan GiB |")
    print(header)
    print("|---" * 11 + "|")
    for n_models, n_train in sizes:
        n_points = n_train * 6 // 5
        folder = Path(tempfile.mkdtemp(prefix="datamodel_scale_"))
        try:
            write_shards(folder, n_models, n_train, n_points)
            fit = run_child("fit", folder, block_bytes)
            rows_run = run_child("rows", folder, block_bytes)
        finally:
            shutil.rmtree(folder)
        plan = datamodel_plan.datamodel_fit_plan(n_models, n_train, n_points, N_CLASSES,
                                                 block_bytes=block_bytes)
        rows_plan = datamodel_plan.datamodel_rows_plan(N_FORGET, n_points, N_CLASSES, n_models,
                                                       block_bytes=block_bytes)
        n_columns = n_points * N_CLASSES
        row = {"M": n_models, "n_train": n_train, "P": n_columns,
               "fit_seconds": fit["seconds"], "fit_rss": fit["peak_rss"],
               "plan": plan.peak_bytes, "rows_seconds": rows_run["seconds"],
               "rows_rss": rows_run["peak_rss"], "rows_plan": rows_plan.peak_bytes}
        rows.append(row)
        blocks = -(-n_columns // fit["block_columns"])
        print(f"| {n_models} | {n_train} | {n_columns} | {gib(4 * n_models * n_columns)} | "
              f"{blocks} | {fit['seconds']:.1f} | {gib(fit['peak_rss'])} | "
              f"{gib(plan.peak_bytes)} | {rows_run['seconds']:.1f} | "
              f"{gib(rows_run['peak_rss'])} | {gib(rows_plan.peak_bytes)} |", flush=True)
    log_a, alpha, beta = fit_power_law(rows)
    rate = float(np.median([row["M"] ** 2 * (row["P"] + row["n_train"]) / row["fit_seconds"]
                            for row in rows]))
    ratio = max(row["fit_rss"] / row["plan"] for row in rows)
    print(f"\nfit time ~ {np.exp(log_a):.3g} s * M^{alpha:.2f} * P^{beta:.2f} "
          f"(least squares on {len(rows)} sizes); measured/planned peak "
          f"{min(row['fit_rss'] / row['plan'] for row in rows):.2f}-{ratio:.2f}")
    paper_columns = PAPER["n_points"] * PAPER["n_classes"]
    seconds = np.exp(log_a) * PAPER["n_models"] ** alpha * paper_columns ** beta
    paper_plan = datamodel_plan.datamodel_fit_plan(**PAPER)
    paper_rows = datamodel_plan.datamodel_rows_plan(5000, PAPER["n_points"],
                                                    PAPER["n_classes"], PAPER["n_models"])
    largest = rows[-1]
    rows_seconds = largest["rows_seconds"] * (5000 / N_FORGET) * (
        PAPER["n_models"] / largest["M"]) * (paper_columns / largest["P"])
    flops_seconds = PAPER["n_models"] ** 2 * (paper_columns + PAPER["n_train"]) / rate
    print(f"multiply-add rate of the fit, median of the sizes: {rate:.3g} per second")
    print(f"paper scale (M {PAPER['n_models']}, n_train {PAPER['n_train']}, "
          f"P {paper_columns}): fit about {seconds / 3600:.1f} hours on one thread "
          f"(power law), {flops_seconds / 3600:.1f} hours (multiply-adds), "
          f"peak {gib(paper_plan.peak_bytes)} GiB planned "
          f"({gib(paper_plan.peak_bytes * ratio)} GiB with the largest measured/planned ratio), "
          f"coefficients {gib(paper_plan.written_bytes['coefficients'])} GiB written; "
          f"rows of a 5,000-point forget set about {rows_seconds / 3600:.1f} hours on one thread "
          f"(|F| M P from the largest size), peak {gib(paper_rows.peak_bytes)} GiB planned, "
          f"{gib(paper_rows.written_bytes['rows'])} GiB written")


if __name__ == "__main__":
    main()
