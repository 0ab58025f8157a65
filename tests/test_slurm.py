"""The workflow through the SLURM profile, on the local cluster of cluster/slurm_local.sh.

Needs the cluster up (`bash cluster/slurm_local.sh start`); without it these tests
FAIL, they do not skip. Two runs go through SLURM, each checked against one local
run of the same config:
- an undisturbed run: every job COMPLETED, GPU rules got one GPU, CPU rules none;
- a run whose training job is cancelled mid-training: Snakemake retries it
  (profile `retries: 2`), and the retry resumes from the epoch checkpoint.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow import REPOSITORY, SNAKEFILE, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = REPOSITORY / "profiles" / "slurm"
# The profile polls every 10 s; the plugin then adds 10 s per poll in which no
# job finished. Starting at 2 s keeps these small runs quick.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "2",
                "--seconds-between-status-checks", "2")
GPU_RULES = {"train_originals", "train_oracles", "train_subset_models", "unlearn",
             "unlearn_batch"}  # unlearn jobs are grouped into unlearn_batch by the profile
EPOCHS = 100
CANCEL_AFTER_EPOCH = 3  # cancel once this epoch of the first model is checkpointed
RUN_TIMEOUT = 900


def slurm_config() -> dict:
    """One config for both SLURM runs, so that one local run is the reference of both.

    100 epochs of a 16-unit MLP on digits take a few seconds: long enough to
    cancel a training job mid-way, short next to the jobs' start-up. Every
    epoch is checkpointed (resume_checkpoint_seconds: 0). 3 SLURM jobs: one
    original shard, one oracle shard (4 models), one grouped unlearn job.
    """
    return {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": EPOCHS, "batch_size": 128, "lr": 0.1},
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
        self.output_path = self.folder / "snakemake.out"
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
                   str(self.folder), "--configfile", str(self.folder / "config.yaml"),
                   *arguments]
        with open(self.output_path, "w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def run_id(self, timeout=120) -> str:
        """The run's UUID, which the plugin gives every SLURM job as its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"SLURM run ID: ([0-9a-f-]{36})", self.output())
            if match:
                return match.group(1)
            assert self.process.poll() is None, f"snakemake ended early:\n{self.output()[-4000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no 'SLURM run ID' in snakemake's output:\n{self.output()[-4000:]}")

    def submitted_jobs(self) -> set[str]:
        return set(re.findall(r"submitted with SLURM jobid (\d+)", self.output()))

    def wait(self, timeout=RUN_TIMEOUT) -> Path:
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"snakemake ran over {timeout} s:\n{self.output()[-4000:]}")
        assert returncode == 0, f"snakemake failed ({returncode}):\n{self.output()[-8000:]}"
        assert "KLOM tables are in results/tables/" in self.output()
        return self.folder

    def stop(self):
        """Interrupt snakemake if it still runs (Ctrl-C: the plugin cancels its jobs)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


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
def local_run(slurm, tmp_path_factory):
    """The reference: the same config run locally, in the background while SLURM runs."""
    folder = tmp_path_factory.mktemp("local")
    write_config(folder, slurm_config())
    run = Run(folder, "--cores", "2")
    yield run
    run.stop()


@pytest.fixture
def slurm_run(slurm, tmp_path):
    started = []

    def start(name):
        folder = tmp_path / name
        folder.mkdir()
        write_config(folder, slurm_config())
        started.append(Run(folder, "--profile", str(PROFILE), *FAST_POLLING))
        return started[-1]

    yield start
    for run in started:
        if run.process.poll() is None:
            run.stop()
            match = re.search(r"SLURM run ID: ([0-9a-f-]{36})", run.output())
            if match:
                _command("scancel", "--name", match.group(1))


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


def check_gpu_requests(jobs):
    lines = "\n".join(job["line"] for job in jobs)
    for job in jobs:
        if job["rule"] in GPU_RULES:
            assert "gres/gpu=1" in job["tres"].split(","), f"GPU job without a GPU:\n{lines}"
        else:  # CPU rules are localrules; any that reaches SLURM must not hold a GPU
            assert "gres/gpu" not in job["tres"], f"CPU job with a GPU:\n{lines}"


def assert_same_results(folder: Path, reference: Path):
    results, expected = folder / "results", reference / "results"
    margins = sorted(path.relative_to(results) for path in results.glob("margins/**/*.npy"))
    assert margins == sorted(path.relative_to(expected)
                             for path in expected.glob("margins/**/*.npy"))
    assert len(margins) == 5  # original, oracle, oracle_holdout, 2 unlearned
    for path in margins:
        assert np.array_equal(np.load(results / path), np.load(expected / path)), path
    pd.testing.assert_frame_equal(pd.read_parquet(results / "tables/klom.parquet"),
                                  pd.read_parquet(expected / "tables/klom.parquet"))
    # Training removes its epoch checkpoints once its outputs are written.
    assert not [path for path in (results / "resume").rglob("*") if path.is_file()]


def test_workflow_runs_under_slurm(slurm_run, local_run):
    run = slurm_run("slurm")
    run_id = run.run_id()
    folder = run.wait()
    jobs = sacct_jobs(run_id)
    assert {job["id"] for job in jobs} == run.submitted_jobs()
    assert all(job["state"] == "COMPLETED" for job in jobs), [job["line"] for job in jobs]
    rules = sorted(job["rule"] for job in jobs)
    assert rules == ["train_oracles", "train_originals", "unlearn_batch"]
    check_gpu_requests(jobs)
    # Both unlearn jobs (do_nothing, gradient_descent) ran in the one group job.
    assert run.output().count("Group job unlearn_batch") == 1
    assert_same_results(folder, local_run.wait())


def test_cancelled_training_job_resumes(slurm_run, local_run):
    run = slurm_run("cancelled")
    run_id = run.run_id()
    log_path = run.folder / "results/logs/train_originals/shard_0.log"
    checkpoint = re.compile(r"\] (.+?): epoch checkpoint after epoch (\d+)$", re.MULTILINE)
    deadline = time.monotonic() + 600
    seen = None
    while seen is None:
        assert time.monotonic() < deadline, f"no epoch checkpoint in time:\n{run.output()[-4000:]}"
        assert run.process.poll() is None, f"snakemake ended early:\n{run.output()[-4000:]}"
        found = checkpoint.findall(log_path.read_text()) if log_path.exists() else []
        if found and int(found[-1][1]) >= CANCEL_AFTER_EPOCH:
            seen = found[-1][0], int(found[-1][1])
        else:
            time.sleep(0.1)
    queue = _command("squeue", "-h", "-t", "RUNNING", "--name", run_id, "-o", "%i %k")
    running = [line.split()[0] for line in queue.stdout.splitlines()
               if "rule_train_originals" in line]
    assert len(running) == 1, f"train_originals is not running:\n{queue.stdout}{queue.stderr}"
    cancel = _command("scancel", running[0])
    assert cancel.returncode == 0, cancel.stderr
    label, epoch = seen

    folder = run.wait()
    jobs = sacct_jobs(run_id)
    assert {job["id"] for job in jobs} == run.submitted_jobs()
    cancelled = next(job for job in jobs if job["id"] == running[0])
    assert cancelled["state"].startswith("CANCELLED"), cancelled["line"]
    others = [job for job in jobs if job is not cancelled]
    assert all(job["state"] == "COMPLETED" for job in others), [job["line"] for job in jobs]
    # The retry: a second train_originals job, submitted after the cancelled one.
    assert [int(job["id"]) > int(running[0]) for job in others
            if job["rule"] == "train_originals"] == [True]
    check_gpu_requests(jobs)

    log = log_path.read_text()
    resumed = dict(re.findall(r"\] (.+?): resuming from epoch checkpoint after epoch (\d+)$",
                              log, re.MULTILINE))
    if f"{label}: already trained before the job restarted; reusing it" not in log:
        # (The cancel can land after that model finished: then it is reused instead.)
        assert int(resumed.get(label, -1)) >= epoch, (
            f"{label} did not resume from epoch {epoch} or later:\n{log}")
        after_resume = log[log.index(f"{label}: resuming from epoch checkpoint"):]
        assert f"{label}: epoch 1/{EPOCHS} " not in after_resume, "trained again from scratch"
    assert_same_results(folder, local_run.wait())
