"""The local job server: a job handed over runs as if cold, or runs cold; never half.

The workflow-level check (margins bit-identical with the server off) is in
test_workflow.py, on the tiny run.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from klomflow import job_server

REPOSITORY = Path(__file__).resolve().parents[1]

# A stand-in for a workflow script: hands itself over first, as workflow_job does, then
# reports where and how it ran.
SCRIPT = textwrap.dedent("""
    from klomflow.job_server import hand_over
    hand_over()
    import json, os, sys, tempfile, time
    print(json.dumps({"pid": os.getpid(), "parent": os.getppid(), "cwd": os.getcwd(),
                      "argv": sys.argv, "tmpdir": os.environ.get("TMPDIR"),
                      "oldpwd": os.environ.get("OLDPWD"),
                      "temporary": tempfile.gettempdir(),
                      "served": os.environ.get("KLOMFLOW_SERVED_JOB"),
                      "torch_loaded": "torch" in sys.modules}), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    action = sys.argv[1]
    if action.startswith("exit"):
        sys.exit(int(action[4:]))
    if action == "raise":
        raise RuntimeError("the job failed")
    if action == "sleep":
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server like the one onstart starts (its environment has the one-thread variables)."""
    folder = tmp_path_factory.mktemp("server")
    socket_path = str(folder / "socket")
    # OLDPWD: a variable the matching ignores, which the jobs below do not have.
    environment = dict(os.environ) | job_server.ONE_THREAD | {"OLDPWD": "/the-server's"}
    environment.pop(job_server.SOCKET_VARIABLE, None)
    log = open(folder / "server.log", "w")
    # The test process is its parent: the server serves until this process ends or stops it.
    process = subprocess.Popen([sys.executable, "-m", "klomflow.job_server", socket_path,
                                str(os.getpid())], env=environment, stdout=log, stderr=log)
    deadline = time.time() + 120
    while "preloaded" not in (folder / "server.log").read_text():
        assert process.poll() is None, (folder / "server.log").read_text()
        assert time.time() < deadline, "the server did not finish its imports"
        time.sleep(0.2)
    yield {"socket": socket_path, "environment": environment, "process": process,
           "log": folder / "server.log"}
    process.terminate()
    process.wait(timeout=30)


def run_job(tmp_path, environment, action="run"):
    """Start the stand-in job in `tmp_path`, with its own temporary folder (as Snakemake's)."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    (tmp_path / "temporary").mkdir(exist_ok=True)
    environment = environment | {"TMPDIR": str(tmp_path / "temporary")}
    return subprocess.Popen([sys.executable, str(script), action], cwd=tmp_path,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def served_environment(server):
    environment = server["environment"] | {job_server.SOCKET_VARIABLE: server["socket"]}
    return {key: value for key, value in environment.items() if key != "OLDPWD"}


def report(process):
    stdout, stderr = process.communicate(timeout=120)
    return json.loads(stdout.splitlines()[0]), stderr, process.returncode


def test_a_served_job_runs_in_a_child_of_the_server_with_the_jobs_context(server, tmp_path):
    process = run_job(tmp_path, served_environment(server))
    ran, stderr, code = report(process)
    assert code == 0, stderr
    assert ran["served"] == "1" and ran["parent"] == server["process"].pid
    assert ran["pid"] != process.pid
    assert ran["cwd"] == str(tmp_path) and ran["argv"] == [str(tmp_path / "job.py"), "run"]
    # The job's environment, not the server's; tempfile asks it afresh.
    assert ran["tmpdir"] == ran["temporary"] == str(tmp_path / "temporary")
    assert ran["oldpwd"] is None
    assert ran["torch_loaded"]
    assert "to stderr" in stderr  # the job's own standard streams


@pytest.mark.parametrize(("action", "expected"), [("exit3", 3), ("exit0", 0), ("raise", 1)])
def test_a_served_job_exits_with_the_scripts_status(server, tmp_path, action, expected):
    process = run_job(tmp_path, served_environment(server), action)
    ran, stderr, code = report(process)
    assert ran["served"] == "1" and code == expected
    if action == "raise":
        assert "RuntimeError: the job failed" in stderr  # the traceback reaches the job's stderr


def test_a_job_with_another_environment_runs_cold(server, tmp_path):
    """Libraries read thread counts at import: the server's imports would not match."""
    environment = served_environment(server) | {"OMP_NUM_THREADS": "2"}
    process = run_job(tmp_path, environment)
    ran, stderr, code = report(process)
    assert code == 0, stderr
    assert ran["served"] is None and ran["pid"] == process.pid and not ran["torch_loaded"]
    assert "environment differs in OMP_NUM_THREADS" in server["log"].read_text()


def test_without_a_server_the_job_runs_cold(tmp_path):
    environment = dict(os.environ) | {job_server.SOCKET_VARIABLE: str(tmp_path / "none")}
    process = run_job(tmp_path, environment)
    ran, stderr, code = report(process)
    assert code == 0 and ran["served"] is None and ran["pid"] == process.pid


def test_environment_matching_ignores_only_the_folders():
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert job_server.environment_matches(base | {"TMPDIR": "/scratch", "PWD": "/run"}, base)
    assert not job_server.environment_matches(base | {"OMP_NUM_THREADS": "4"}, base)
    assert not job_server.environment_matches(base | {"CUDA_VISIBLE_DEVICES": "1"}, base)
    assert not job_server.environment_matches({"PATH": "/bin"}, base)


def wait_for_pid_file(tmp_path):
    deadline = time.time() + 60
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        assert time.time() < deadline
        time.sleep(0.1)
    return int((tmp_path / "pid").read_text())


def wait_until_gone(pid):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_signal_to_the_job_reaches_the_child(server, tmp_path):
    """Snakemake stops a job by signalling the process it started."""
    process = run_job(tmp_path, served_environment(server), "sleep")
    child = wait_for_pid_file(tmp_path)
    assert child != process.pid
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 1  # the child died of the signal: no exit status
    assert wait_until_gone(child)


def test_the_child_dies_with_the_jobs_process(server, tmp_path):
    """Even when the job's process is killed outright, nothing runs on unseen."""
    process = run_job(tmp_path, served_environment(server), "sleep")
    child = wait_for_pid_file(tmp_path)
    process.kill()
    process.communicate(timeout=60)
    assert wait_until_gone(child)


def test_start_serves_only_local_runs_on_linux(monkeypatch, tmp_path):
    monkeypatch.delenv(job_server.SOCKET_VARIABLE, raising=False)
    job_server.start(local=False, log_path=tmp_path / "server.log")
    assert job_server.SOCKET_VARIABLE not in os.environ and not (tmp_path / "server.log").exists()
    monkeypatch.setenv(job_server.SOCKET_VARIABLE, "off")
    job_server.start(local=True, log_path=tmp_path / "server.log")
    assert os.environ[job_server.SOCKET_VARIABLE] == "off"
    assert not (tmp_path / "server.log").exists()
    monkeypatch.delenv(job_server.SOCKET_VARIABLE)
    monkeypatch.setattr(sys, "platform", "darwin")  # forking there is unsafe: jobs run cold
    job_server.start(local=True, log_path=tmp_path / "server.log")
    assert job_server.SOCKET_VARIABLE not in os.environ and not (tmp_path / "server.log").exists()


def test_start_and_stop_around_a_local_run(monkeypatch, tmp_path):
    """What the Snakefile's onstart and onsuccess do; the jobs inherit the socket's path."""
    monkeypatch.delenv(job_server.SOCKET_VARIABLE, raising=False)
    log = tmp_path / "logs" / "job_server.log"
    job_server.start(local=True, log_path=log)
    try:
        socket_path = os.environ[job_server.SOCKET_VARIABLE]
        # As Snakemake runs a one-thread job: its environment plus the thread variables.
        process = run_job(tmp_path, dict(os.environ) | job_server.ONE_THREAD)
        ran, stderr, code = report(process)
        assert code == 0 and ran["served"] == "1", stderr + log.read_text()
    finally:
        job_server.stop()
    assert job_server.SOCKET_VARIABLE not in os.environ
    assert not Path(socket_path).parent.exists()
    assert "stopped: served 1 jobs; 0 ran cold" in log.read_text()
