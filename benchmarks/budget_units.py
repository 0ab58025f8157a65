"""Benchmark: the per-unit constants of `klomflow budget` measured on this machine.

Run by hand: `python benchmarks/budget_units.py`. Prints
 1. the peak resident memory (ru_maxrss, as every job logs it) of probe jobs run by
    Snakemake exactly as klomflow's jobs run (a `script:` rule, workflow_job's
    script_context, KLOMFLOW_JOB_SERVER=off): for each kind of job (numpy and pandas;
    with torch; with torch training a model on the CPU) a probe that allocates nothing
    and one that allocates 400 MB more. The second minus 400 MB is the kind's steady
    baseline; the first, where larger, is its start-up peak;
 2. float64 matrix-product speed on one thread (the datamodel fit's cost unit).
klomflow/jobs/budget_costs.py holds the printed values, with their date.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
EXTRA = 400_000_000
KINDS = {
    "numpy": "import numpy as np\nimport pandas as pd\nimport klomflow.io\n",
    "numpy_jobs": (
        "import numpy as np\nimport pandas as pd\nimport klomflow.jobs.forget_sets\n"
        "import klomflow.jobs.published\nimport klomflow.forget_sets.kinds\n"
    ),
    "torch": "import numpy as np\nimport torch\nimport klomflow.jobs.runs\n",
    "torch_training": (
        "import numpy as np\nimport torch\nimport klomflow.jobs.runs\n"
        "model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),"
        " torch.nn.Linear(256, 10))\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for _ in range(50):\n"
        "    loss = model(torch.randn(16, 64)).square().mean()\n"
        "    optimizer.zero_grad(); loss.backward(); optimizer.step()\n"
    ),
}


def probe_peaks() -> dict:
    rules = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for kind, imports in KINDS.items():
            for extra in (0, EXTRA):
                name = f"{kind}_{extra}"
                (folder / f"{name}.py").write_text(
                    f"import sys\nsys.path.insert(0, {str(REPOSITORY / 'workflow_scripts')!r})\n"
                    "from workflow_job import script_context\n"
                    + imports
                    + "log, config = script_context(snakemake)\n"
                    + f"x = np.ones({extra} // 4, np.float32)\n"
                    + "open(snakemake.output[0], 'w').close()\n"
                )
                rules.append(
                    f"rule {name}:\n    output: '{name}.done'\n    log: '{name}.log'\n"
                    f"    script: '{name}.py'\n"
                )
        targets = ", ".join(f"'{kind}_{extra}.done'" for kind in KINDS for extra in (0, EXTRA))
        (folder / "Snakefile").write_text(f"rule all:\n    input: {targets}\n" + "".join(rules))
        environment = dict(
            os.environ,
            KLOMFLOW_JOB_SERVER="off",
            PYTHONPATH=os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
        )
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"],
            cwd=folder,
            env=environment,
            check=True,
            capture_output=True,
        )
        peaks = {}
        for kind in KINDS:
            for extra in (0, EXTRA):
                text = (folder / f"{kind}_{extra}.log").read_text()
                peaks[kind, extra] = float(re.findall(r"peak memory ([\d.]+) MiB", text)[-1])
        return peaks


def matmul_gflops(n: int = 2000) -> float:
    import threadpoolctl

    a, b = np.random.rand(n, n), np.random.rand(n, n)
    with threadpoolctl.threadpool_limits(1):
        a @ b
        started = time.perf_counter()
        for _ in range(3):
            a @ b
        seconds = (time.perf_counter() - started) / 3
    return 2 * n**3 / seconds / 1e9


def main():
    print(f"machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    peaks = probe_peaks()
    for kind in KINDS:
        steady = peaks[kind, EXTRA] - EXTRA / 2**20
        print(
            f"{kind:15} job alone {peaks[kind, 0]:7.1f} MiB; with 400 MB more "
            f"{peaks[kind, EXTRA]:7.1f} MiB: steady baseline {steady:6.1f} MiB"
        )
    print(f"float64 matmul on one thread: {matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
