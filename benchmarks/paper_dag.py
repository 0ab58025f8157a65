"""Benchmark: plan the full paper DAG (config/paper_cifar10.yaml) without running it.

Run by hand: `python benchmarks/paper_dag.py`. In a scratch folder without
CIFAR-10 (config validation then uses the nominal 50,000 training points), it
times `snakemake --dry-run` of the paper configuration and prints the number
of jobs per rule and the seconds it took against the 60-second budget.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "tests"))

from workflow import parse_job_stats  # noqa: E402

CONFIG = REPOSITORY / "config" / "paper_cifar10.yaml"
BUDGET_SECONDS = 60


def plan() -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPOSITORY / "Snakefile"),
             "--directory", folder, "--configfile", str(CONFIG), "--dry-run", "--quiet",
             "rules"],
            capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
    return seconds, parse_job_stats(result.stdout + result.stderr)


def main():
    print(f"machine: {os.cpu_count()} CPUs; config {CONFIG.relative_to(REPOSITORY)}")
    seconds, jobs = plan()
    width = max(map(len, jobs))
    for rule, count in jobs.items():
        print(f"{rule:<{width}}  {count:>6}")
    print(f"{'total':<{width}}  {sum(jobs.values()):>6}")
    print(f"dry run of the paper DAG: {seconds:.1f} s = {seconds / BUDGET_SECONDS:.2f} of the "
          f"{BUDGET_SECONDS} s budget")


if __name__ == "__main__":
    main()
