"""Job logs: timestamped lines, flushed at once so a user can `tail -f` a long job."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def open_log(path=None):
    """A `log(message)` function appending to `path` (stderr when None).

    Snakemake deletes a rule's log before each attempt, so a retried job's log
    holds its last attempt, which says where it resumed from.
    """
    if path is None:
        stream = sys.stderr
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", buffering=1)

    def log(message: str) -> None:
        stream.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n")
        stream.flush()

    return log
