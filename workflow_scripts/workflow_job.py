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

import atexit  # noqa: E402  (after the hand-over: not needed by it)
import resource  # noqa: E402
import traceback  # noqa: E402

from klomflow.logs import open_log  # noqa: E402

# Line-buffered as in a served job: a job killed by a signal keeps its output to the last line.
sys.stdout.reconfigure(line_buffering=True)


def script_context(snakemake):
    """(log, config) for a workflow script; pins torch to the job's thread count.

    From here on, an uncaught exception's traceback goes to the job's log as well as to
    stderr: Snakemake's error message points at the log.
    """
    if "torch" in sys.modules:  # light jobs never import torch
        sys.modules["torch"].set_num_threads(max(1, int(snakemake.threads)))
    log = open_log(snakemake.log[0] if snakemake.log else None)
    failed = []
    if snakemake.log:
        log_uncaught_exceptions(log, failed)
    # The job's peak resident memory (`klomflow budget` predicts it): its last line, or the
    # line before the traceback of a job that failed.
    atexit.register(lambda: failed or log_peak_memory(log))
    return log, snakemake.config


def log_peak_memory(log) -> None:
    log(f"peak memory {peak_rss_mib():.1f} MiB (ru_maxrss)")


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log_uncaught_exceptions(log, failed: list) -> None:
    """Have `sys.excepthook` write the peak memory and an uncaught exception's traceback
    with `log` first (and note the failure in `failed`)."""
    previous = sys.excepthook

    def hook(kind, value, trace):
        try:
            failed.append(kind)
            log_peak_memory(log)
            text = "".join(traceback.format_exception(kind, value, trace)).rstrip()
            log(f"the job failed:\n{text}")
        finally:
            previous(kind, value, trace)

    sys.excepthook = hook
