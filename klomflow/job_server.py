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
- Only third-party libraries are preloaded (`PRELOADED`). The server itself
  imports a little of klomflow (this module); each child forgets it, so that a
  job imports klomflow through its own sys.path, from disk: an edit between
  runs is never missed, and a job of another checkout runs that checkout's code.
- The server serves a job only if the job's Python executable and environment
  equal the server's (apart from `IGNORED_VARIABLES`, read by nothing at import
  time). Libraries read thread counts and similar settings from the environment
  when they are imported; a job with other settings (e.g. a rule with more
  threads) runs cold, in its own process, as before.
- The server never runs a torch or numpy operation, so no thread pool exists
  when it forks (it counts the threads the kernel knows of); each child sets its
  own thread count (`workflow_job`) and reseeds numpy's global random state, as
  Python reseeds `random` after a fork.
- A child ends as the interpreter would: it waits for the script's non-daemon
  threads, runs the exit functions and flushes; an uncaught exception goes to
  `sys.excepthook` (which `workflow_job` extends to write it to the job's log).
  Its standard output is line-buffered, so a killed job's output is kept to its
  last line.
- The job's process stays the one Snakemake watches: a signal it receives is
  passed to the child, and the child kills itself when the job's process dies.

Anything that goes wrong before the child starts the script (no server yet, a
refused or failed hand-over) leaves the job to run cold in its own process.
`KLOMFLOW_JOB_SERVER=off` in the environment turns the server off.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import json
import os
import runpy
import signal
import socket
import struct
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
# Makes torch.cuda.is_available() ask NVML instead of initialising CUDA, which would make
# forking unsafe; read when called, not at import. Set in the server's environment only.
NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
# The prompt variables of an interactive shell: `source venv/bin/activate` exports PS1, which
# the server inherits from Snakemake, while the non-interactive bash that Snakemake starts each
# job in drops PS1 and PS2. The others are ignored for the same reason, should a shell export
# them.
INTERACTIVE_SHELL_VARIABLES = frozenset({"PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND"})
# Variables a job may differ in: nothing preloaded reads them at import time. Snakemake sets
# the temporary folders per job (tempfile's cached choice is cleared in each child); the
# shell sets `_`, `PWD` and `OLDPWD` (the child changes to the job's folder itself).
IGNORED_VARIABLES = frozenset({"TMPDIR", "TMP", "TEMP", "TEMPDIR", "_", "PWD", "OLDPWD",
                               SOCKET_VARIABLE, SERVED_VARIABLE, NVML_CUDA_CHECK}
                              | INTERACTIVE_SHELL_VARIABLES)
# Threads that may run when the server forks: jemalloc's background thread (pyarrow starts it
# at import) is stopped and reset by jemalloc's own fork handlers.
FORK_SAFE_THREADS = frozenset({"jemalloc_bg_thd"})
# The file in the server's folder where it leaves its counts for stop().
SUMMARY_FILE = "summary.json"
_HEADER = struct.Struct("!Q")


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
    os.environ.setdefault(NVML_CUDA_CHECK, "1")  # start() sets it; so does a server run by hand
    environment = dict(os.environ)  # what jobs must match: the imports below add to it
    for name in PRELOADED:
        importlib.import_module(name)
    # Variables the imports set (torch._dynamo sets TORCHINDUCTOR_CACHE_DIR): a cold job's
    # own imports would set them too.
    set_by_imports = {key: value for key, value in os.environ.items() if key not in environment}
    _log(f"preloaded {', '.join(PRELOADED)} in {time.perf_counter() - started:.1f} s")
    hazard = _fork_hazard()
    if hazard:
        raise SystemExit(f"klomflow job server: {hazard}; forking is unsafe")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
    signal.signal(signal.SIGTERM, _stop_serving)  # from stop(): log the counts, then end
    listener.settimeout(1.0)
    served = 0
    cold = collections.Counter()  # why jobs ran cold, and how many for each reason
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
                cold[reason] += 1
                _log(f"runs cold: {request['script']}: {reason}")
                _send(connection, _HEADER.pack(0))
                connection.close()
                for descriptor in descriptors:
                    os.close(descriptor)
                continue
            sys.stdout.flush()  # nothing of the server's may reach the job's streams
            sys.stderr.flush()
            if os.fork() == 0:
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
        if os.getppid() == parent:  # stopped by stop(), which reads the counts
            summary = {"served": served, "cold": dict(cold)}
            Path(socket_path).with_name(SUMMARY_FILE).write_text(json.dumps(summary))
        remove_socket(socket_path)  # also when Snakemake died without stopping it
        _log(f"stopped: served {served} jobs; {sum(cold.values())} ran cold")


def _fork_hazard() -> str:
    """What makes forking this process unsafe (empty when nothing does)."""
    # The kernel's list, not `threading`'s: a library's native threads (OpenMP, CUDA) are
    # unknown to Python.
    threads = [Path(f"/proc/self/task/{task}/comm").read_text().strip()
               for task in os.listdir("/proc/self/task") if int(task) != os.getpid()]
    unsafe = [name for name in threads if name not in FORK_SAFE_THREADS]
    if unsafe:
        return f"an import started {len(unsafe)} thread(s) ({', '.join(sorted(unsafe))})"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a CUDA context dies in a fork
        return "an import initialised CUDA"
    return ""


def remove_socket(socket_path: str) -> None:
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
        _reseed_random_state()
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
        _forget_klomflow()
        # Line-buffered: a job killed by a signal or by _die_with_job never flushes.
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        _send(connection, _HEADER.pack(os.getpid()))
        threading.Thread(target=_die_with_job, args=(connection,), daemon=True).start()
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = _exit_status(stop.code)
        except BaseException:
            code = 1
            _report_uncaught(*sys.exc_info())
        # As the interpreter ends: wait for non-daemon threads, then the exit functions.
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        _send(connection, bytes([code]))
    finally:
        os._exit(code)


def _reseed_random_state() -> None:
    # The forked child has the server's numpy global state; a cold job seeds its own from the
    # operating system. (Python reseeds `random` after a fork itself.)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _forget_klomflow() -> None:
    # The server imported klomflow from its own sys.path; the job imports it afresh from the
    # job's, as a cold start would (another checkout, or a file edited since the server began).
    for name in [name for name in sys.modules if name.split(".")[0] == "klomflow"]:
        del sys.modules[name]
    importlib.invalidate_caches()  # the finders' cached folder listings may be stale


def _report_uncaught(kind, value, trace) -> None:
    # What the interpreter does with an uncaught exception: the script may have replaced the hook.
    try:
        sys.excepthook(kind, value, trace)
    except BaseException:
        traceback.print_exception(kind, value, trace)


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


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
