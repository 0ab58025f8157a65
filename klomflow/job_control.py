"""The Snakefile's side of the warm job server (klomflow/job_server.py): start one before a
local run (`onstart`), stop it after (`onsuccess`, `onerror`), and warn when most of the
run's jobs ran cold, saying why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from klomflow.job_server import (
    NVML_CUDA_CHECK,
    ONE_THREAD,
    SOCKET_VARIABLE,
    SUMMARY_FILE,
    remove_socket,
)

_running = None  # this process's server, when it started one: (process, folder, log path)


def start(local: bool, log_path="results/logs/job_server.log") -> None:
    """Start a server for this Snakemake process's jobs (its `onstart`), if it is a local run
    on Linux.

    Its jobs find it through `KLOMFLOW_JOB_SERVER`, which they inherit.
    """
    global _running
    if not local or os.environ.get(SOCKET_VARIABLE) == "off" or _running is not None:
        return
    if not sys.platform.startswith("linux"):
        # macOS aborts forked children of a process whose imports touched system frameworks
        # (why Python's multiprocessing spawns there); elsewhere there is no fork.
        return
    folder = tempfile.mkdtemp(prefix="klomflow-job-server-")  # short: socket paths are limited
    socket_path = os.path.join(folder, "socket")
    environment = dict(os.environ) | ONE_THREAD | {NVML_CUDA_CHECK: "1"}
    environment.pop(SOCKET_VARIABLE, None)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "klomflow.job_server", socket_path, str(os.getpid())],
            env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)  # a terminal's Ctrl-C reaches Snakemake, which stops it
    _running = (process, folder, str(log_path))
    os.environ[SOCKET_VARIABLE] = socket_path
    # Until it listens (a fraction of a second), a job could not connect and would run cold.
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)


def stop() -> None:
    """Stop this process's server (its `onsuccess` and `onerror`); running jobs finish.

    Warns on stderr when most of the run's jobs ran cold, and why.
    """
    global _running
    if _running is None:
        return
    process, folder, log_path = _running
    _running = None
    os.environ.pop(SOCKET_VARIABLE, None)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    summary_path = Path(folder, SUMMARY_FILE)
    try:
        summary = json.loads(summary_path.read_text())
        summary_path.unlink()
    except (OSError, ValueError):
        summary = None  # the server ended early (its log says why)
    remove_socket(os.path.join(folder, "socket"))
    warning = cold_run_warning(summary, log_path) if summary else ""
    if warning:
        print(warning, file=sys.stderr, flush=True)


def cold_run_warning(summary: dict, log_path: str) -> str:
    """A warning when most jobs of a run ran cold (`summary`: the server's counts), naming the
    reasons, most frequent first; empty otherwise."""
    cold = sum(summary["cold"].values())
    total = cold + summary["served"]
    if cold * 2 <= total:
        return ""
    reasons = sorted(summary["cold"].items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{count} because {reason}" for reason, count in reasons[:3])
    if len(reasons) > 3:
        shown += f"; {sum(count for _, count in reasons[3:])} for other reasons"
    return (f"klomflow: warning: {cold} of {total} jobs ran cold, each importing torch and "
            f"pandas itself (about 3 s a job), not in the warm job server: {shown}. A job is "
            "served only when it runs on one thread, in Snakemake's own Python and environment "
            f"(docs/performance.md, \"Warm job starts\"; {log_path}).")
