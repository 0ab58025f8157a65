"""Benchmark: the privacy metrics (klomflow/metrics/privacy/) on synthetic margins.

Run by hand on an idle machine: `python benchmarks/privacy.py [--threads 2] [--skip-large]`.
Prints the wall time of
 1. every metric of one method setting at the default run's size (100 models a
    side, 1,797 points: 100 forget, 1,337 retain, 360 val; retain scored on a
    seeded subset of 1,000 as in the workflow), and the same with the epsilon computed
    as before its candidate search (tests/privacy_grid.py: the full double-threshold
    grid search), side by side;
 2. the competition's per-example epsilon alone on 60,000 points x 100 models a
    side (all CIFAR-10 training and validation points, for scale), and U-LiRA
    on the same arrays.
Numerical libraries are pinned to `--threads` threads (set before numpy loads), and
epsilon's chunks run on that many threads. Each line gives the wall time and the process's
CPU time (all threads), which is the fairer figure on a shared machine.
"""

import argparse
import os
import sys
import time
from pathlib import Path


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exception):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def __str__(self):
        return f"{self.wall:.2f} s wall, {self.cpu:.2f} s CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--large-points", type=int, default=60_000)
    arguments = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(arguments.threads)
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests")]
    import numpy as np
    from privacy_grid import grid_search

    from klomflow.metrics import privacy

    threads = arguments.threads
    rng = np.random.default_rng(0)
    # A method that moved forget margins part of the way: shifted and narrower than the oracles.
    n_models, n_points = 100, 1797
    splits = np.array(["forget"] * 100 + ["retain"] * 1337 + ["val"] * 360)
    oracle = rng.normal(2.0, 1.0, (n_models, n_points))
    tested = rng.normal(2.5, 0.8, (n_models, n_points))
    original = rng.normal(4.0, 1.0, (n_models, n_points))
    print(f"threads: {threads}; cpus visible: {os.cpu_count()}")
    with Clock() as clock:
        _, summaries, _ = privacy.privacy_points(tested, oracle, original, splits,
                                                 threads=threads)
    scored = sum(s["n_points"] for s in summaries.values())
    print(f"default-run size, all metrics, {n_models} models a side, {scored} points scored: "
          f"{clock}")
    with Clock() as clock:
        privacy.competition_epsilon(tested[:, :scored], oracle[:, :scored], threads=threads)
    print(f"  the competition's epsilon alone: {clock} "
          f"({1000 * clock.cpu / scored:.2f} ms CPU per point)")
    with grid_search():
        with Clock() as clock:
            privacy.privacy_points(tested, oracle, original, splits, threads=threads)
        print(f"  as before (full grid search), all metrics: {clock}")
        with Clock() as clock:
            privacy.competition_epsilon(tested[:, :scored], oracle[:, :scored], threads=threads)
        print(f"  as before (full grid search), the competition's epsilon alone: {clock}")
    if arguments.skip_large:
        return
    n_large = arguments.large_points
    oracle = rng.normal(2.0, 1.0, (n_models, n_large))
    tested = rng.normal(2.5, 0.8, (n_models, n_large))
    with Clock() as clock:
        privacy.competition_epsilon(tested, oracle, threads=threads)
    print(f"{n_large} points x {n_models} models a side, competition epsilon: {clock} "
          f"({1000 * clock.cpu / n_large:.2f} ms CPU per point)")
    with Clock() as clock:
        scores = privacy.lira_scores(tested, np.arange(n_models), tested, np.arange(n_models),
                                     oracle, np.arange(n_models), 5)
        privacy.lira_summary(*scores, 5, "per_example")
    print(f"{n_large} points x {n_models} models a side, U-LiRA (scores, ROC, per-point AUC "
          f"and balanced accuracy): {clock}")


if __name__ == "__main__":
    main()
