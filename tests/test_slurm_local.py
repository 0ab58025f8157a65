"""cluster/slurm_local.sh's start-up checks, on stand-in daemons (no SLURM needed)."""

import shutil
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "slurm_local.sh"


def run_with_helpers(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Source the script's functions (state under tmp_path) and run `body` in bash."""
    program = f"""
set -euo pipefail
export KLOMFLOW_SLURM_STATE={tmp_path}/state KLOMFLOW_SLURM_TIMEOUT=20
source {SCRIPT}
mkdir -p "$LOGS" "$PIDS"
{body}
"""
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)


def test_a_daemon_that_is_slow_to_exec_is_waited_for(tmp_path):
    # For its first second the process is still `sh`, not the daemon: on a cold machine
    # munged is likewise still setpriv for a moment. A check by name called it dead.
    daemon = tmp_path / "standind"  # a uniquely named sleep, so no other process matches
    daemon.symlink_to(shutil.which("sleep"))
    ready = tmp_path / "ready"
    result = run_with_helpers(tmp_path, f"""
launch standind sh -c 'sleep 1; touch {ready}; exec {daemon} 5'
wait_for "the stand-in daemon" standind test -e {ready}
echo WAITED
kill "$(cat "$PIDS/standind.pid")"
""")
    assert result.returncode == 0, result.stderr
    assert "WAITED" in result.stdout


def test_a_daemon_that_dies_is_reported_with_its_log(tmp_path):
    result = run_with_helpers(tmp_path, """
launch sleep sh -c 'echo "fatal: bad config" >&2; exit 3'
wait_for "the stand-in daemon" sleep false
echo NOT_REACHED
""")
    assert result.returncode != 0
    assert "NOT_REACHED" not in result.stdout
    assert "sleep exited while waiting for: the stand-in daemon" in result.stderr
    assert "fatal: bad config" in result.stderr  # its log is shown


def test_a_zombie_daemon_does_not_count_as_running(tmp_path):
    # A daemon killed hard lingers as a zombie until reaped; taking it for a running
    # daemon made `start` skip starting a new one (then the accounting database was missing).
    daemon = tmp_path / "standinz"
    daemon.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(daemon), "0"])  # exits at once; not reaped until wait()
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the stand-in never became a zombie"
            time.sleep(0.05)
        result = run_with_helpers(tmp_path, """
running_any standinz && echo ZOMBIE_COUNTED || echo ZOMBIE_IGNORED
sleep 5 & live=$!
running_any sleep && echo LIVE_FOUND
kill $live
""")
    finally:
        child.wait()
    assert result.returncode == 0, result.stderr
    assert "ZOMBIE_IGNORED" in result.stdout and "LIVE_FOUND" in result.stdout
