"""The workflow through the SLURM profile, on the local cluster of cluster/slurm_local.sh.

Needs the cluster up (`bash cluster/slurm_local.sh start`); without it these tests
FAIL, they do not skip. Three runs of one small config start side by side:
- a local run (`--cores 2`): the reference;
- an undisturbed run through the profile: every job COMPLETED, GPU rules got one
  GPU, CPU rules none, and the same margins and KLOM table as the local run;
- a run through the profile whose training job is cancelled (scancel) while its
  ensemble trains: Snakemake retries it (profile `retries: 2`), the retry resumes
  every model from the epoch checkpoint, and the results are again those of the
  local run.
Side by side they take about as long as the slowest: the cluster's one GPU runs
the GPU jobs one after another anyway. Only the undisturbed run makes every target
(its CPU jobs, e.g. plots, go to SLURM too); the others stop at the KLOM table.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow import REPOSITORY, SNAKEFILE, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = REPOSITORY / "profiles" / "slurm"
# The profile polls every 10 s; the plugin then adds 10 s per poll in which no
# job finished. Starting at 2 s keeps these small runs quick.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "2",
                "--seconds-between-status-checks", "2")
# unlearn jobs run grouped, as one unlearn_batch job per 4 (profile `groups`).
GPU_RULES = {"train_originals", "train_oracles", "train_subset_models", "unlearn",
             "unlearn_batch", "derive_forget_set"}
EPOCHS = 600
CANCEL_AFTER_EPOCH = 3  # stop the job once an epoch checkpoint at least this late is logged
RUN_TIMEOUT = 1200


def small_node_memory() -> tuple:
    """The profile's set-resources with every mem_mb at 2 GB, restated in full (a command
    line --set-resources replaces the profile's): the local node (80% of the free memory)
    may hold less than a paper job's grant (unlearn: 16 GB), and SLURM refuses a job no
    node can hold; this workflow's jobs need far less."""
    sized = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
    return ("--set-resources", *(
        f"{rule}:{key}={2000 if key == 'mem_mb' else str(value).replace(' ', '')}"
        for rule, grants in sized.items() for key, value in grants.items()))


def slurm_config() -> dict:
    """One config for all three runs, so that one local run is the reference of both.

    Training takes the ensemble path (`train.ensemble`, the default, spelled out):
    a job trains its shard's models together, and a killed job resumes at the
    ensemble's last epoch checkpoint, which is what the cancelled run tests.
    600 epochs of an ensemble of 16-unit MLPs on digits take about 5 s: time
    enough to stop the job mid-training, short next to a SLURM job's start-up.
    Every epoch is checkpointed (resume_checkpoint_seconds: 0). GPU jobs: one
    original shard (2 models), one oracle shard (4 models), one grouped unlearn
    job (2 settings).
    """
    return {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": EPOCHS, "batch_size": 128, "lr": 0.1, "ensemble": True},
        "models": {"n_originals": 2, "n_oracles": 2, "n_holdout_oracles": 2,
                   "seeds_per_job": 4, "resume_checkpoint_seconds": 0},
        "forget_sets": {"random_20": {"kind": "random", "size": 20, "seed": 1}},
        "methods": {"do_nothing": None, "gradient_descent": {"epochs": 1}},
        "klom": {"bins": 10},
    }


def _command(*arguments):
    return subprocess.run(list(arguments), capture_output=True, text=True, timeout=60)


class Run:
    """`snakemake` on our Snakefile in `folder`, in the background; output to a file."""

    def __init__(self, folder: Path, *arguments):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_config(self.folder, slurm_config())
        self.output_path = self.folder / "snakemake.out"
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
                   str(self.folder), "--configfile", str(self.folder / "config.yaml"),
                   *arguments]
        with open(self.output_path, "w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def tail(self, n=4000) -> str:
        return f"snakemake output ({self.output_path}):\n{self.output()[-n:]}"

    def run_id(self, timeout=180) -> str:
        """The run's UUID, which the plugin gives every SLURM job as its name."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(r"SLURM run ID: ([0-9a-f-]{36})", self.output())
            if match:
                return match.group(1)
            assert self.process.poll() is None, f"snakemake ended early; {self.tail()}"
            assert time.monotonic() < deadline, f"no 'SLURM run ID'; {self.tail()}"
            time.sleep(0.5)

    def submitted_jobs(self) -> set[str]:
        return set(re.findall(r"submitted with SLURM jobid (\d+)", self.output()))

    def wait(self, timeout=RUN_TIMEOUT) -> Path:
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"snakemake ran over {timeout} s; {self.tail()}") from None
        assert returncode == 0, f"snakemake failed ({returncode}); {self.tail(8000)}"
        assert "KLOM tables are in results/tables/" in self.output()
        return self.folder

    def stop(self):
        """Interrupt snakemake if it still runs (Ctrl-C: the plugin cancels its jobs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        match = re.search(r"SLURM run ID: ([0-9a-f-]{36})", self.output())
        if match:  # whatever of this run is still queued or running
            _command("scancel", "--name", match.group(1))


class CancelMidTraining(threading.Thread):
    """Cancels `run`'s train_originals job while its ensemble trains.

    A cancel sent at an epoch checkpoint may land after training ended (100 epochs
    of these models take a second), and then the retry has nothing to resume. So
    once the job's log shows an epoch checkpoint, the job's step is first stopped
    (`scancel --signal=STOP`); at rest, its log says the epoch every model had
    reached, and the resume folder that no model had finished. Only then is the
    job cancelled. Then waits until Snakemake reports the job as failed (so that it
    retries it). Records what it saw; an AssertionError on the way is kept in `error`.
    """

    def __init__(self, run: Run):
        super().__init__(daemon=True)
        self.run_ = run
        self.log_path = run.folder / "results/logs/train_originals/shard_0.log"
        self.resume_dir = run.folder / "results/resume/original/shard_0"
        self.stopped = threading.Event()
        self.error = None
        self.job_id = None
        self.labels = self.epoch = None  # the ensemble's models, the epoch they had reached
        self.checkpointed = None  # files in the resume folder when the job was stopped

    def run(self):
        try:
            self._cancel()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test
            self.error = error

    def _wait(self, what, condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition():
            assert not self.stopped.is_set(), "stopped"
            assert self.run_.process.poll() is None, f"snakemake ended early; {self.run_.tail()}"
            assert time.monotonic() < deadline, f"{what} within {timeout} s; {self.run_.tail()}"
            time.sleep(0.1)

    def _log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def _training_process_states(self) -> list[str]:
        """States (/proc: R, S, T for stopped, ...) of the run's train_models.py processes.

        The local cluster's node is this machine, so the job's processes are ours to see.
        """
        states = []
        for process in Path("/proc").iterdir():
            try:
                if (process.name.isdigit()
                        and b"train_models.py" in (process / "cmdline").read_bytes()
                        and os.path.samefile(process / "cwd", self.run_.folder)):
                    states.append((process / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return states

    def _cancel(self):
        run_id = self.run_.run_id()
        checkpoint = re.compile(r"\] (.+?): epoch checkpoint after epoch (\d+)$", re.MULTILINE)

        def checkpointed():
            found = checkpoint.findall(self._log())
            return bool(found) and int(found[-1][1]) >= CANCEL_AFTER_EPOCH

        # The GPU jobs of the other SLURM run may come first in the queue.
        self._wait("no epoch checkpoint in train_originals' log", checkpointed, 900)
        queue = _command("squeue", "-h", "-t", "RUNNING", "--name", run_id, "-o", "%i %k")
        running = [line.split()[0] for line in queue.stdout.splitlines()
                   if "rule_train_originals" in line]
        assert len(running) == 1, f"train_originals is not running:\n{queue.stdout}{queue.stderr}"
        self.job_id = running[0]
        stop = _command("scancel", "--signal=STOP", self.job_id)
        assert stop.returncode == 0, stop.stderr

        def at_rest():  # the signal travels through slurmctld and slurmd
            states = self._training_process_states()
            return bool(states) and all(state == "T" for state in states)

        self._wait("the training process did not stop", at_rest, 60)
        log = self._log()
        self.checkpointed = sorted(path.name for path in self.resume_dir.iterdir())
        reached = {}  # model -> last checkpointed epoch
        for label, epoch in checkpoint.findall(log):
            reached[label] = int(epoch)
        self.labels, self.epoch = sorted(reached), min(reached.values())
        mid_training = (self.epoch < EPOCHS
                        and not any(name.startswith("model_") for name in self.checkpointed))
        if not mid_training:
            _command("scancel", "--signal=CONT", self.job_id)
            raise AssertionError(
                f"stopped train_originals only after its models had finished (epoch "
                f"{self.epoch}/{EPOCHS}; resume folder {self.checkpointed}): too late to test "
                f"a resume; give the models more epochs.\n{log[-2000:]}")
        cancel = _command("scancel", self.job_id)
        assert cancel.returncode == 0, cancel.stderr
        # Snakemake must take the cancelled job for failed (and retry it), not wait forever.
        failed = f"SLURM-job '{self.job_id}' failed"
        try:
            self._wait("no failure reported", lambda: failed in self.run_.output(), 240)
        except AssertionError as error:
            state = _command("sacct", "-X", "-P", "-n", "-j", self.job_id, "--format=State")
            raise AssertionError(
                f"snakemake did not notice that SLURM job {self.job_id} was cancelled (sacct "
                f"state: {state.stdout.strip()!r}). snakemake-executor-plugin-slurm 2.x reads "
                "sacct's 'CANCELLED by <uid>' as still running; the profile needs "
                f"`slurm-status-command: squeue`.\n{error}") from None


@pytest.fixture(scope="module")
def slurm():
    """Fails (does not skip) unless the cluster answers and its node takes jobs."""
    hint = "SLURM is not running here: start it with `bash cluster/slurm_local.sh start`"
    for tool in ("sinfo", "squeue", "sacct", "scancel"):
        assert shutil.which(tool), f"{hint} (no `{tool}` on PATH)"
    sinfo = _command("sinfo", "-h", "-o", "%P %a %T")
    assert sinfo.returncode == 0, f"{hint}\nsinfo: {sinfo.stderr.strip()}"
    states = sinfo.stdout.split()
    assert "up" in states and {"idle", "mixed", "allocated"} & set(states), (
        f"{hint}; no node takes jobs:\n{sinfo.stdout}")
    sacct = _command("sacct", "-X", "-n", "-S", "now-1hours", "--format=JobID")
    assert sacct.returncode == 0, f"{hint} (accounting, slurmdbd)\nsacct: {sacct.stderr.strip()}"


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm_runs")
    # The set-resources list ends before FAST_POLLING (options), not before the targets.
    profile = ("--profile", str(PROFILE), *small_node_memory(), *FAST_POLLING)
    # The undisturbed run makes every target; the other two only what they compare.
    compared = ("results/tables/klom.parquet", "results/margins/original.npy")
    started = {"slurm": Run(folder / "slurm", *profile),
               "cancelled": Run(folder / "cancelled", *profile, *compared),
               "local": Run(folder / "local", "--cores", "2", *compared)}
    canceller = CancelMidTraining(started["cancelled"])
    canceller.start()
    yield SimpleNamespace(**started, canceller=canceller)
    canceller.stopped.set()
    canceller.join(timeout=30)
    for run in started.values():
        run.stop()


def sacct_jobs(run_id: str) -> list[dict]:
    """The run's SLURM jobs (their name is the run ID), from accounting."""
    result = _command("sacct", "-X", "-P", "-n", "-S", "now-1days", "--name", run_id,
                      "--format=JobID,JobName,State,AllocTRES,Comment")
    assert result.returncode == 0, result.stderr
    jobs = []
    for line in result.stdout.splitlines():
        job_id, name, state, tres, comment = line.split("|", 4)
        assert comment.startswith("rule_"), f"no rule in the job's comment: {line}"
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        if rule.startswith("unlearn_batch"):  # group jobs: rule_<group>_<rules>
            rule = "unlearn_batch"
        jobs.append({"id": job_id, "name": name, "state": state, "tres": tres,
                     "comment": comment, "rule": rule, "line": line})
    print(f"sacct, run {run_id}:\n" + "\n".join(job["line"] for job in jobs))
    return jobs


def check_jobs(run: Run, jobs: list[dict], cancelled=()):
    lines = "\n".join(job["line"] for job in jobs)
    assert {job["id"] for job in jobs} == run.submitted_jobs(), lines
    for job in jobs:
        if job["id"] in cancelled:
            assert job["state"].startswith("CANCELLED"), lines
        else:
            assert job["state"] == "COMPLETED", lines
        if job["rule"] in GPU_RULES:
            assert "gres/gpu=1" in job["tres"].split(","), f"GPU job without a GPU:\n{lines}"
        else:  # CPU rules: localrules, or SLURM jobs without a GPU
            assert "gres/gpu" not in job["tres"], f"CPU job with a GPU:\n{lines}"
    gpu_jobs = sorted(job["rule"] for job in jobs if job["rule"] in GPU_RULES
                      and job["id"] not in cancelled)
    # One original shard, one oracle shard, both unlearn jobs in one group job.
    assert gpu_jobs == ["train_oracles", "train_originals", "unlearn_batch"], lines


def assert_same_results(folder: Path, reference: Path):
    results, expected = folder / "results", reference / "results"
    margins = sorted(path.relative_to(results) for path in results.glob("margins/**/*.npy"))
    assert margins == sorted(path.relative_to(expected)
                             for path in expected.glob("margins/**/*.npy"))
    assert {Path("margins/original.npy"), Path("margins/oracle/random_20.npy")} <= set(margins)
    assert len([path for path in margins if path.parts[1] == "unlearned"]) == 2
    for path in margins:
        assert np.array_equal(np.load(results / path), np.load(expected / path)), path
    pd.testing.assert_frame_equal(pd.read_parquet(results / "tables/klom.parquet"),
                                  pd.read_parquet(expected / "tables/klom.parquet"))
    # Training removes its epoch checkpoints once its outputs are written.
    assert not [path for path in (results / "resume").rglob("*") if path.is_file()]


def test_workflow_runs_under_slurm(runs):
    run = runs.slurm
    run_id = run.run_id()
    folder = run.wait()
    check_jobs(run, sacct_jobs(run_id))
    assert run.output().count("Group job unlearn_batch") == 1
    assert_same_results(folder, runs.local.wait())


def test_cancelled_training_job_resumes(runs):
    run, canceller = runs.cancelled, runs.canceller
    canceller.join(timeout=RUN_TIMEOUT)
    assert not canceller.is_alive(), "the canceller thread did not finish"
    if canceller.error is not None:
        raise canceller.error
    folder = run.wait()
    jobs = sacct_jobs(run.run_id())
    check_jobs(run, jobs, cancelled={canceller.job_id})
    # The retry: a second train_originals job, submitted after the cancelled one.
    retries = [job for job in jobs if job["rule"] == "train_originals"
               and job["id"] != canceller.job_id]
    assert [int(job["id"]) > int(canceller.job_id) for job in retries] == [True]
    assert "Trying to restart job" in run.output()

    # The cancel landed mid-training: the ensemble of both originals had checkpointed
    # an epoch and finished no model.
    assert len(canceller.labels) == 2, canceller.labels
    assert [name for name in canceller.checkpointed if not name.startswith(".")] == [
        "ensemble_0.pt"], canceller.checkpointed
    # The retry's log (Snakemake deletes a rule's log before each attempt): it trained
    # the same ensemble on from the checkpoint, every model from the epoch after it.
    log = canceller.log_path.read_text()
    assert "already trained before the job restarted" not in log, log[:2000]
    assert log.count(f"training {len(canceller.labels)} models together as one ensemble") == 1
    for label in canceller.labels:
        resumed = re.findall(rf"\] {re.escape(label)}: resuming from epoch checkpoint after "
                             r"epoch (\d+)$", log, re.MULTILINE)
        assert len(resumed) == 1 and int(resumed[0]) >= canceller.epoch, (
            f"{label} did not resume from epoch {canceller.epoch} or later:\n{log[:2000]}")
        trained = [int(epoch) for epoch in
                   re.findall(rf"\] {re.escape(label)}: epoch (\d+)/{EPOCHS} ", log)]
        assert trained == list(range(int(resumed[0]) + 1, EPOCHS + 1)), (
            f"{label} resumed after epoch {resumed[0]} but trained epochs "
            f"{trained[:3]}...{trained[-3:]}:\n{log[:2000]}")
    assert_same_results(folder, runs.local.wait())
