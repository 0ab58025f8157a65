"""Warm job starts for local runs: jobs fork from one process that has already imported torch.

A local run starts a few hundred short Python jobs, and each one used to spend
about 3.5 s importing torch, pandas and pyarrow before doing a second or two of
work: on the default config that was half of all CPU time. For a local run
(not SLURM) the Snakefile's `onstart` starts this module as a server that
imports those libraries once; each workflow script, as its first import
(`workflow_job`), hands its job to the server. The server forks a child, which
takes over the job's working directory, environment, sys.path and standard
streams and runs the job's script as a fresh interpreter would, while the job's
own process waits and exits with the child's status.

What keeps results identical to a cold start:
- Only third-party libraries are preloaded (`PRELOADED`), never klomflow: each
  job imports our code from disk, so an edit between runs is never missed.
- The server serves a job only if the job's Python executable and environment
  equal the server's (apart from `IGNORED_VARIABLES`, read by nothing at import
  time). Libraries read thread counts and similar settings from the environment
  when they are imported; a job with other settings (e.g. a rule with more
  threads) runs cold, in its own process, as before.
- The server never runs a torch or numpy operation, so no thread pool exists
  when it forks; each child sets its own thread count (`workflow_job`).
- The job's process stays the one Snakemake watches: a signal it receives is
  passed to the child, and the child kills itself when the job's process dies.

Anything that goes wrong before the child starts the script (no server yet, a
refused or failed hand-over) leaves the job to run cold in its own process.
`KLOMFLOW_JOB_SERVER=off` in the environment turns the server off.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from klomflow.logs import open_log

# The environment variable that carries the server's socket path to the jobs.
SOCKET_VARIABLE = "KLOMFLOW_JOB_SERVER"
# Set in a child, so that the script it runs does not hand itself over again.
SERVED_VARIABLE = "KLOMFLOW_SERVED_JOB"
# What the server imports once: everything heavy that workflow scripts import.
PRELOADED = ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "scipy.special", "scipy.stats",
             "torch", "torch.func", "torch._dynamo", "snakemake.script")
# The thread variables Snakemake sets for a one-thread job (snakemake/shell.py); the server
# starts with them so that one-thread jobs match its environment.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                                     "NUMEXPR_NUM_THREADS")}
# Variables a job may differ in: nothing preloaded reads them at import time. Snakemake sets
# the temporary folders per job (tempfile's cached choice is cleared in each child); the
# shell sets `_`, `PWD` and `OLDPWD` (the child changes to the job's folder itself).
IGNORED_VARIABLES = frozenset({"TMPDIR", "TMP", "TEMP", "TEMPDIR", "_", "PWD", "OLDPWD",
                               SOCKET_VARIABLE, SERVED_VARIABLE})
_HEADER = struct.Struct("!Q")
_running = None  # this process's server, when it started one: (process, folder)


def differing_variables(job: dict, server: dict) -> list:
    """The variables in which a job's environment differs from the server's, apart from
    `IGNORED_VARIABLES`."""
    return sorted(key for key in set(job) | set(server)
                  if key not in IGNORED_VARIABLES and job.get(key) != server.get(key))


def environment_matches(job: dict, server: dict) -> bool:
    """True when a job's environment is the server's, apart from `IGNORED_VARIABLES`."""
    return not differing_variables(job, server)


# ---------------------------------------------------------------- the job's side


def hand_over() -> None:
    """Run this job in a child of the local job server, if one serves it; then exit.

    Returns (and the caller runs the job itself) when no server is set, the
    server is unreachable or refuses the job. Never returns once a child has
    started the job: this process exits with the child's status.
    """
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or path == "off" or os.environ.get(SERVED_VARIABLE):
        return
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        request = json.dumps({"script": os.path.abspath(sys.argv[0]), "argv": sys.argv,
                              "cwd": os.getcwd(), "environment": dict(os.environ),
                              "executable": sys.executable, "path": sys.path}).encode()
        socket.send_fds(connection, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        reply = _receive_exactly(connection, _HEADER.size)
    except OSError:
        reply = b""
    if len(reply) < _HEADER.size or _HEADER.unpack(reply)[0] == 0:
        connection.close()  # not served: run here, cold
        return
    child = _HEADER.unpack(reply)[0]

    def pass_on(signal_number, frame):
        try:
            os.kill(child, signal_number)
        except ProcessLookupError:
            pass

    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                          signal.SIGUSR2):
        signal.signal(signal_number, pass_on)
    status = _receive_exactly(connection, 1)
    if not status:
        sys.stderr.write(f"klomflow job server: the job's process {child} ended without an "
                         "exit status (killed by a signal?)\n")
        os._exit(1)
    os._exit(status[0])


def _receive_exactly(connection, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = connection.recv(size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------- the server


def serve(socket_path: str, parent: int) -> None:
    """Listen at `socket_path` until the process `parent` ends, forking a child per job."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    # Listening before the imports: jobs that start meanwhile wait in the queue for the
    # imports instead of doing their own.
    listener.listen(256)
    started = time.perf_counter()
    environment = dict(os.environ)  # what jobs must match: the imports below add to it
    for name in PRELOADED:
        importlib.import_module(name)
    # Variables the imports set (torch._dynamo sets TORCHINDUCTOR_CACHE_DIR): a cold job's
    # own imports would set them too.
    set_by_imports = {key: value for key, value in os.environ.items() if key not in environment}
    _log(f"preloaded {', '.join(PRELOADED)} in {time.perf_counter() - started:.1f} s")
    if threading.active_count() != 1:
        raise SystemExit("klomflow job server: an import started a thread; forking is unsafe")
    if sys.modules["torch"].cuda.is_initialized():  # a CUDA context does not survive a fork
        raise SystemExit("klomflow job server: an import initialised CUDA; forking is unsafe")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
    signal.signal(signal.SIGTERM, _stop_serving)  # from stop(): log the counts, then end
    listener.settimeout(1.0)
    served = refused = 0
    try:
        while os.getppid() == parent:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            # A job's process sends its whole request at once: one that stalls must not
            # hold up the others.
            connection.settimeout(10)
            try:
                request, descriptors = _receive_request(connection)
            except (OSError, ValueError) as error:
                _log(f"unreadable request: {error}")
                connection.close()
                continue
            reason = _refusal(request, environment)
            if reason:
                refused += 1
                _log(f"runs cold: {request['script']}: {reason}")
                _send(connection, _HEADER.pack(0))
            elif os.fork() == 0:
                listener.close()
                connection.settimeout(None)
                _run_child(connection, request, descriptors, set_by_imports)  # never returns
            else:
                served += 1
            connection.close()
            for descriptor in descriptors:
                os.close(descriptor)
    finally:
        listener.close()
        _remove_socket(socket_path)  # also when Snakemake died without stopping it
        _log(f"stopped: served {served} jobs; {refused} ran cold")


def _remove_socket(socket_path: str) -> None:
    for remove, path in ((os.unlink, socket_path), (os.rmdir, os.path.dirname(socket_path))):
        try:
            remove(path)
        except OSError:
            pass


def _stop_serving(signal_number, frame):
    raise SystemExit(0)


def _receive_request(connection):
    message, descriptors, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    try:
        if len(message) < _HEADER.size or len(descriptors) != 3:
            raise ValueError("truncated request")
        size = _HEADER.unpack(message[:_HEADER.size])[0]
        body = message[_HEADER.size:]
        body += _receive_exactly(connection, size - len(body))
        return json.loads(body), descriptors
    except (OSError, ValueError):
        for descriptor in descriptors:
            os.close(descriptor)
        raise


def _refusal(request: dict, environment: dict) -> str:
    """Why the server will not run this job (empty when it will)."""
    if request["executable"] != sys.executable:
        return f"another Python ({request['executable']})"
    differing = differing_variables(request["environment"], environment)
    return f"environment differs in {', '.join(differing)}" if differing else ""


def _run_child(connection, request: dict, descriptors, set_by_imports: dict) -> None:
    """In the forked child: become the job's process and run its script; then exit."""
    code = 1
    try:
        for signal_number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signal_number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)  # only the job's process passes signals on; no terminal's Ctrl-C twice
        for target, descriptor in enumerate(descriptors):
            os.dup2(descriptor, target)
            os.close(descriptor)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(set_by_imports | request["environment"])
        os.environ[SERVED_VARIABLE] = "1"
        tempfile.tempdir = None
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        _send(connection, _HEADER.pack(os.getpid()))
        threading.Thread(target=_die_with_job, args=(connection,), daemon=True).start()
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = _exit_status(stop.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        _send(connection, bytes([code]))
    finally:
        os._exit(code)


def _die_with_job(connection) -> None:
    # The job's process never sends after its request: end of file means it is gone.
    try:
        connection.recv(1)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _send(connection, data: bytes) -> None:
    try:
        connection.sendall(data)
    except OSError:
        pass


# The server's log: its stderr, which start() points at results/logs/job_server.log.
_log = open_log()


# ---------------------------------------------------------------- the Snakefile's side


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
    environment = dict(os.environ) | ONE_THREAD
    environment.pop(SOCKET_VARIABLE, None)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "klomflow.job_server", socket_path, str(os.getpid())],
            env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)  # a terminal's Ctrl-C reaches Snakemake, which stops it
    _running = (process, folder)
    os.environ[SOCKET_VARIABLE] = socket_path
    # Until it listens (a fraction of a second), a job could not connect and would run cold.
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)


def stop() -> None:
    """Stop this process's server (its `onsuccess` and `onerror`); running jobs finish."""
    global _running
    if _running is None:
        return
    process, folder = _running
    _running = None
    os.environ.pop(SOCKET_VARIABLE, None)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    _remove_socket(os.path.join(folder, "socket"))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
