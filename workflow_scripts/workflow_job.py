"""What every workflow script does first with the `snakemake` object Snakemake hands it.

Kept on the workflow side, so the package never sees that object: scripts
import this module by name (Snakemake puts a script's folder on sys.path).

Every script imports this module first (ruff's isort keeps it on top): in a
local run, importing it hands the job to the warm job server, whose child runs
the script with torch and pandas already imported (klomflow/job_server.py),
and this process only waits for it. Without a server the script runs here.
"""

import sys

from klomflow.job_server import hand_over

hand_over()

from klomflow.logs import open_log  # noqa: E402  (after the hand-over: not needed by it)


def script_context(snakemake):
    """(log, config) for a workflow script; pins torch to the job's thread count."""
    if "torch" in sys.modules:  # light jobs never import torch
        sys.modules["torch"].set_num_threads(max(1, int(snakemake.threads)))
    log = open_log(snakemake.log[0] if snakemake.log else None)
    return log, snakemake.config
