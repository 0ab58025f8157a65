"""Size and load time of results/explorer.html at CIFAR-10 scale (run by hand).

A synthetic run in the workflow's own layout (tests/explorer_run.py): 50,000 training and
10,000 validation points, N models per side, ten method settings, a forget set of 1,000,
32x32 RGB images. Builds the page with the default `explorer` options, then opens it in
headless Chromium (tests/cdp.py) and times navigation until every view has rendered.

    python benchmarks/explorer.py [--models 100] [--settings 10] [--scratch /tmp/explorer_bench]
                                  [--reuse]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cdp import Browser  # noqa: E402
from explorer_run import write_run  # noqa: E402

from klomflow.metrics.klom import KlomOptions  # noqa: E402
from klomflow.options import ExplorerOptions  # noqa: E402
from klomflow.reporting.explorer_page import explorer_html  # noqa: E402

ALL_SPLITS = """(async () => {
  const menu = Array.from(document.querySelectorAll("#chart-points select")).find(
    (select) => Array.from(select.options).some((option) => option.value === "all"));
  const start = performance.now();
  menu.value = "all";
  menu.dispatchEvent(new Event("change"));
  await window.klomflow.views.points.runAsync();
  return performance.now() - start;
})()"""


def chromium_cpu_seconds(scratch: Path) -> float:
    """User and system CPU seconds of every Chromium process using this scratch profile: the
    work an idle machine would do, which a shared machine's wall time inflates."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for process in Path("/proc").iterdir():
        try:
            command = (process / "cmdline").read_bytes()
            if str(scratch / "chromium-profile").encode() not in command:
                continue
            fields = (process / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--settings", type=int, default=10)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/explorer_bench"))
    parser.add_argument(
        "--reuse", action="store_true", help="keep the synthetic run already under --scratch"
    )
    arguments = parser.parse_args()
    methods = [f"method_{k}" for k in range(arguments.settings)]
    images_path = arguments.scratch / "images.npy"
    if arguments.reuse and images_path.exists():
        results, images = arguments.scratch / "results", np.load(images_path)
    else:
        start = time.perf_counter()
        results, images = write_run(
            arguments.scratch,
            n_train=50_000,
            n_val=10_000,
            n_models=arguments.models,
            methods=methods,
            forget_size=1000,
            image_shape=(32, 32, 3),
        )
        np.save(images_path, images)
        print(f"synthetic run written in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    page = arguments.scratch / "explorer.html"
    page.write_text(explorer_html(results, KlomOptions(), ExplorerOptions(), images=images))
    print(f"page built in {time.perf_counter() - start:.0f} s: {page.stat().st_size / 1e6:.1f} MB")
    print(f"load average before opening: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for attempt in range(3):
        with Browser(arguments.scratch) as browser:
            cpu = chromium_cpu_seconds(arguments.scratch)
            start = time.perf_counter()
            browser.open(page)
            browser.wait_for("window.klomflow && window.klomflow.ready", timeout=120)
            seconds = time.perf_counter() - start
            cpu = chromium_cpu_seconds(arguments.scratch) - cpu
            # The reader's heaviest step: every split's points in the scatter.
            every_split = browser.evaluate(ALL_SPLITS)
            timings = browser.evaluate("window.klomflow.timings")
            errors = browser.console_errors
        steps = ", ".join(f"{name} {value / 1000:.2f}" for name, value in timings.items())
        print(
            f"open {attempt + 1}: every view rendered {seconds:.2f} s after navigation, "
            f"{cpu:.2f} s of CPU in Chromium's processes "
            f"(in the page, s: {steps}); console errors: {len(errors)}; the scatter "
            f"redrawn with all {len(images):,} points in {every_split / 1000:.2f} s"
        )


if __name__ == "__main__":
    main()
