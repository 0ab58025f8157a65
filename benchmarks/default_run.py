"""Benchmark: the default workflow cold, and training throughput.

Run by hand on an idle machine: `python benchmarks/default_run.py`. It
 1. trains a few default models in this process and prints models per second
    (one thread), and the throughput of the default recipe on the full and the
    forget-set-reduced training set side by side;
 2. runs the default config cold (`snakemake --cores all` in a scratch copy of
    the working directory) and prints its wall time against the 10-minute
    budget, and the per-rule job counts.
Pass --skip-run to measure only the throughput, --also-without-privacy for a second
cold run with `privacy.metrics: []` (the stages the former default's 424 s run had),
--also-without-job-server for a cold run with KLOMFLOW_JOB_SERVER=off (every job imports
torch itself, as before klomflow/job_server.py) and the ratio of the two.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 600


def training_throughput(n_models: int = 5) -> dict:
    from klomflow.config import load
    from klomflow.jobs.runs import dataset_for
    from klomflow.training.loop import Recipe, train_model
    from klomflow.training.models import build_model

    torch.set_num_threads(1)
    config = load(REPOSITORY / "config.yaml")
    dataset = dataset_for(config, REPOSITORY)
    recipe = Recipe.from_config(config["train"])
    figures = {}
    # One untimed model first: torch's first calls pay one-off set-up costs.
    warm_up = build_model(config["model"], dataset.input_shape, dataset.n_classes, 0)
    train_model(warm_up, dataset.train_x, dataset.train_y, recipe, torch.Generator().manual_seed(0),
                torch.device("cpu"), log=lambda message: None)
    for label, n_points in (("full training set", dataset.n_train),
                            ("minus 100 points", dataset.n_train - 100)):
        started = time.perf_counter()
        for seed in range(n_models):
            model = build_model(config["model"], dataset.input_shape, dataset.n_classes, seed)
            train_model(model, dataset.train_x[:n_points], dataset.train_y[:n_points], recipe,
                        torch.Generator().manual_seed(seed), torch.device("cpu"),
                        log=lambda message: None)
        figures[label] = n_models / (time.perf_counter() - started)
    return figures


def default_run(without_privacy: bool = False, job_server: bool = True) -> float:
    text = (REPOSITORY / "config.yaml").read_text()
    if without_privacy:
        # The stages of the former default's 424 s run: the same config, no privacy metrics.
        metrics = "  metrics: [competition, ulira, lira]\n"
        if metrics not in text:
            raise SystemExit(f"config.yaml has no line {metrics.strip()!r} to turn off")
        text = text.replace(metrics, "  metrics: []\n")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.yaml").write_text(text)
        started = time.perf_counter()
        environment = dict(os.environ) | ({} if job_server else {"KLOMFLOW_JOB_SERVER": "off"})
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPOSITORY / "Snakefile"),
                        "--directory", folder, "--cores", "all", "--quiet"], check=True,
                       env=environment)
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--also-without-privacy", action="store_true",
                        help="a second cold run with privacy.metrics: [] (the stages the former "
                             "default had)")
    parser.add_argument("--also-without-job-server", action="store_true",
                        help="a second cold run with KLOMFLOW_JOB_SERVER=off")
    arguments = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    figures = training_throughput()
    for label, models_per_second in figures.items():
        print(f"training throughput, one thread, {label}: {models_per_second:.2f} models/s")
    values = list(figures.values())
    print(f"ratio full / reduced training set: {values[0] / values[1]:.2f}")
    if not arguments.skip_run:
        seconds = default_run()
        print(f"default config, cold, --cores all: {seconds:.0f} s "
              f"= {seconds / BUDGET_SECONDS:.2f} of the {BUDGET_SECONDS} s budget")
        if arguments.also_without_privacy:
            without = default_run(without_privacy=True)
            print(f"default config without privacy metrics, cold, --cores all: {without:.0f} s "
                  f"(privacy metrics: {seconds - without:.0f} s of the default's wall time)")
        if arguments.also_without_job_server:
            cold_jobs = default_run(job_server=False)
            print(f"default config, cold, KLOMFLOW_JOB_SERVER=off: {cold_jobs:.0f} s; "
                  f"warm job starts are {cold_jobs / seconds:.2f}x faster")


if __name__ == "__main__":
    main()
