"""The local job server: a job handed over runs as if cold, or runs cold; never half.

The workflow-level check (margins bit-identical with the server off) is in
test_workflow.py, on the tiny run.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from klomflow import job_control, job_server

REPOSITORY = Path(__file__).resolve().parents[1]
# What `source venv/bin/activate` exports into the shell Snakemake starts from.
PROMPT = {"PS1": "(venv) $ ", "PS2": "> "}

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
    if action == "random":
        import numpy
        print(numpy.random.rand())
    if action == "killed":  # no flush: lost with a block-buffered stdout
        print("before the kill")
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "thread":  # a non-daemon thread outlives the script's main code
        import threading
        threading.Thread(target=lambda: (time.sleep(0.5), print("the thread finished"))).start()
    if action == "klomflow":
        import klomflow.logs
        print(klomflow.__file__, getattr(klomflow.logs, "CHECKOUT", None))
    if action == "work":
        start = time.process_time()
        while time.process_time() < start + 1:
            pass
        print(time.process_time() - start)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server like the one onstart starts (its environment has the one-thread variables)."""
    folder = tmp_path_factory.mktemp("server")
    socket_path = str(folder / "socket")
    # OLDPWD: a variable the matching ignores, which the jobs below do not have. The prompt
    # variables: as in a run started from a shell after `source venv/bin/activate`.
    environment = (dict(os.environ) | job_server.ONE_THREAD | {"OLDPWD": "/the-server's"}
                   | PROMPT)
    environment.pop(job_server.SOCKET_VARIABLE, None)
    # Python's default buffering, which the tests of a killed job's output need.
    environment.pop("PYTHONUNBUFFERED", None)
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


def run_job(tmp_path, environment, action="run", script_text=SCRIPT, through_bash=False):
    """Start the stand-in job in `tmp_path`, with its own temporary folder (as Snakemake's);
    `through_bash`: in a non-interactive bash, as Snakemake starts a script job."""
    script = tmp_path / "job.py"
    script.write_text(script_text)
    (tmp_path / "temporary").mkdir(exist_ok=True)
    environment = environment | {"TMPDIR": str(tmp_path / "temporary")}
    command = [sys.executable, str(script), action]
    if through_bash:
        command = ["/bin/bash", "-c", "set -euo pipefail; " + " ".join(command)]
    return subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def served_environment(server):
    environment = server["environment"] | {job_server.SOCKET_VARIABLE: server["socket"]}
    return {key: value for key, value in environment.items() if key != "OLDPWD"}


def report(process):
    """(what the job reported, its stderr, its exit status); `ran["output"]`: the lines of
    standard output after the report."""
    stdout, stderr = process.communicate(timeout=120)
    lines = stdout.splitlines()
    return json.loads(lines[0]) | {"output": lines[1:]}, stderr, process.returncode


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


def test_a_job_started_by_bash_after_venv_activation_is_served(server, tmp_path):
    """Snakemake's non-interactive bash drops PS1 and PS2, which the server has."""
    assert set(PROMPT) <= set(served_environment(server))
    process = run_job(tmp_path, served_environment(server), through_bash=True)
    ran, stderr, code = report(process)
    assert code == 0 and ran["served"] == "1", stderr + server["log"].read_text()


def test_environment_matching_ignores_only_the_folders_and_the_prompt():
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert job_server.environment_matches(base | {"TMPDIR": "/scratch", "PWD": "/run"}, base)
    assert job_server.environment_matches(base, base | PROMPT | {"PROMPT_COMMAND": "date"})
    assert not job_server.environment_matches(base, base | {"VIRTUAL_ENV": "/venv"})
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
    job_control.start(local=False, log_path=tmp_path / "server.log")
    assert job_server.SOCKET_VARIABLE not in os.environ and not (tmp_path / "server.log").exists()
    monkeypatch.setenv(job_server.SOCKET_VARIABLE, "off")
    job_control.start(local=True, log_path=tmp_path / "server.log")
    assert os.environ[job_server.SOCKET_VARIABLE] == "off"
    assert not (tmp_path / "server.log").exists()
    monkeypatch.delenv(job_server.SOCKET_VARIABLE)
    monkeypatch.setattr(sys, "platform", "darwin")  # forking there is unsafe: jobs run cold
    job_control.start(local=True, log_path=tmp_path / "server.log")
    assert job_server.SOCKET_VARIABLE not in os.environ and not (tmp_path / "server.log").exists()


def test_start_and_stop_around_a_local_run(monkeypatch, tmp_path, capsys):
    """What the Snakefile's onstart and onsuccess do; the jobs inherit the socket's path."""
    monkeypatch.delenv(job_server.SOCKET_VARIABLE, raising=False)
    monkeypatch.delenv(job_server.NVML_CUDA_CHECK, raising=False)
    log = tmp_path / "logs" / "job_server.log"
    job_control.start(local=True, log_path=log)
    try:
        socket_path = os.environ[job_server.SOCKET_VARIABLE]
        # The server asks NVML whether CUDA is there, should an import ask; its jobs do not.
        server_environment = Path(f"/proc/{job_control._running[0].pid}/environ").read_bytes()
        assert f"{job_server.NVML_CUDA_CHECK}=1".encode() in server_environment.split(b"\0")
        assert job_server.NVML_CUDA_CHECK not in os.environ
        # As Snakemake runs a one-thread job: its environment plus the thread variables.
        process = run_job(tmp_path, dict(os.environ) | job_server.ONE_THREAD)
        ran, stderr, code = report(process)
        assert code == 0 and ran["served"] == "1", stderr + log.read_text()
    finally:
        job_control.stop()
    assert job_server.SOCKET_VARIABLE not in os.environ
    assert not Path(socket_path).parent.exists()
    assert "stopped: served 1 jobs; 0 ran cold" in log.read_text()
    assert "warning" not in capsys.readouterr().err
    assert not Path(socket_path).parent.exists()  # its counts read and removed


def test_stop_warns_when_most_jobs_ran_cold(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(job_server.SOCKET_VARIABLE, raising=False)
    log = tmp_path / "logs" / "job_server.log"
    job_control.start(local=True, log_path=log)
    try:
        process = run_job(tmp_path, dict(os.environ) | job_server.ONE_THREAD
                          | {"OMP_NUM_THREADS": "2"})
        ran, stderr, code = report(process)
        assert code == 0 and ran["served"] is None, stderr
    finally:
        job_control.stop()
    warning = capsys.readouterr().err
    assert "1 of 1 jobs ran cold" in warning
    assert "1 because environment differs in OMP_NUM_THREADS" in warning and str(log) in warning


def test_the_cold_run_warning_counts_and_orders_the_reasons():
    reasons = {"environment differs in PS1": 5, "another Python (/venv/bin/python)": 2,
               "environment differs in A": 1, "environment differs in B": 1,
               "environment differs in C": 1}
    warning = job_control.cold_run_warning({"served": 9, "cold": reasons}, "the.log")
    assert ("10 of 19 jobs ran cold" in warning
            and "5 because environment differs in PS1; 2 because another Python "
                "(/venv/bin/python); 1 because environment differs in A; 2 for other reasons"
            in warning)
    assert job_control.cold_run_warning({"served": 10, "cold": reasons}, "the.log") == ""
    assert job_control.cold_run_warning({"served": 0, "cold": {}}, "the.log") == ""


def test_a_served_job_imports_klomflow_from_its_own_sys_path(server, tmp_path):
    """Another checkout (here: the script's folder) or a file edited since the server began."""
    shutil.copytree(REPOSITORY / "klomflow", tmp_path / "klomflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "klomflow" / "logs.py", "a") as logs:
        logs.write('\nCHECKOUT = "the job\'s"\n')
    process = run_job(tmp_path, served_environment(server), "klomflow")
    ran, stderr, code = report(process)
    assert code == 0 and ran["served"] == "1", stderr
    assert ran["output"] == [f"{tmp_path / 'klomflow' / '__init__.py'} the job's"]


def test_served_jobs_draw_their_own_numpy_random_numbers(server, tmp_path):
    """As cold jobs do: each seeds numpy's global state from the operating system."""
    draws = []
    for _ in range(2):
        ran, stderr, code = report(run_job(tmp_path, served_environment(server), "random"))
        assert code == 0 and ran["served"] == "1", stderr
        draws.append(float(ran["output"][0]))
    assert draws[0] != draws[1]


def test_a_killed_served_job_keeps_its_output(server, tmp_path):
    ran, stderr, code = report(run_job(tmp_path, served_environment(server), "killed"))
    assert ran["served"] == "1" and code == 1  # the child died of the signal: no exit status
    assert ran["output"] == ["before the kill"]


def test_a_served_job_ends_after_its_threads(server, tmp_path):
    ran, stderr, code = report(run_job(tmp_path, served_environment(server), "thread"))
    assert code == 0 and ran["served"] == "1", stderr
    assert ran["output"] == ["the thread finished"]


def test_a_served_jobs_work_is_not_in_its_process_tree(server, tmp_path):
    """Why Snakemake's `benchmark:` would measure only the waiting process (docs/performance.md)."""
    process = run_job(tmp_path, served_environment(server), "work")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    ran, stderr, code = report(process)
    assert code == 0 and ran["served"] == "1", stderr
    assert float(ran["output"][0]) >= 1  # CPU seconds of the child
    assert usage.ru_utime + usage.ru_stime < 0.5  # of the job's process and its own children


def test_the_server_will_not_fork_while_a_native_thread_runs(tmp_path):
    """`threading` knows only Python's threads; an OpenMP pool or a CUDA thread is native."""
    (tmp_path / "starts_a_native_thread.py").write_text(
        "import _thread, time\n_thread.start_new_thread(time.sleep, (600,))\n")
    # Parent -1, which is no process's: a server that passed the check would stop at once.
    serve = ("import sys; from klomflow import job_server; "
             "job_server.PRELOADED = ('starts_a_native_thread',); "
             "job_server.serve(sys.argv[1], -1)")
    finished = subprocess.run([sys.executable, "-c", serve, str(tmp_path / "socket")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    assert "an import started 1 thread(s) (python); forking is unsafe" in finished.stderr


# A stand-in for a workflow script that fails after script_context, as a method that raises.
FAILING_SCRIPT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPOSITORY / "workflow_scripts")!r})  # as Snakemake's preamble
    from workflow_job import script_context
    import json, os, signal, types
    print(json.dumps({{"served": os.environ.get("KLOMFLOW_SERVED_JOB")}}), flush=True)
    job = types.SimpleNamespace(log=["job.log"], threads=1, config={{}})
    log, config = script_context(job)
    log("started")
    print("before the end")  # not flushed
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("the method failed")
""")


@pytest.mark.parametrize("served", [True, False])
def test_a_failing_job_writes_its_traceback_to_its_log(server, tmp_path, served):
    """Snakemake's error message says to look at the job's log."""
    environment = served_environment(server)
    if not served:
        environment[job_server.SOCKET_VARIABLE] = "off"
    ran, stderr, code = report(run_job(tmp_path, environment, "raise", FAILING_SCRIPT))
    assert code == 1 and (ran["served"] == "1") == served
    log = (tmp_path / "job.log").read_text()
    assert "started" in log and "the job failed:\nTraceback" in log
    assert log.rstrip().endswith("RuntimeError: the method failed")
    # Its peak memory just before the traceback (`klomflow budget` compares with it).
    assert re.search(r"peak memory [\d.]+ MiB \(ru_maxrss\)\n\[[^]]+\] the job failed", log)
    assert "RuntimeError: the method failed" in stderr  # and to stderr, as before


@pytest.mark.parametrize("served", [True, False])
def test_a_killed_job_keeps_its_output_to_the_last_line(server, tmp_path, served):
    environment = served_environment(server)
    if not served:
        environment[job_server.SOCKET_VARIABLE] = "off"
    ran, stderr, code = report(run_job(tmp_path, environment, "kill", FAILING_SCRIPT))
    assert (ran["served"] == "1") == served and code in (1, -signal.SIGKILL)
    assert ran["output"] == ["before the end"]
