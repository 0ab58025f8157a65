"""What every workflow script does first with the `snakemake` object Snakemake hands it.

Kept on the workflow side, so the package never sees that object: scripts
import this module by name (Snakemake puts a script's folder on sys.path).
"""

import sys

from klomflow.logs import open_log


def script_context(snakemake):
    """(log, config) for a workflow script; pins torch to the job's thread count."""
    if "torch" in sys.modules:  # light jobs never import torch
        sys.modules["torch"].set_num_threads(max(1, int(snakemake.threads)))
    log = open_log(snakemake.log[0] if snakemake.log else None)
    return log, snakemake.config
