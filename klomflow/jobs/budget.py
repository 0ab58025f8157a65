"""`klomflow budget`: what a config will cost, per rule, before anything runs.

Plans the DAG with Snakemake's API (every job, as on a fresh folder; no torch), prices
each job with its rule's cost function (klomflow/jobs/budget_costs.py) and prints per
rule: the job count, the disk written, the largest peak memory of any job, GPU-hours
and CPU-hours, with totals; then, given a profile, every rule whose need exceeds what
the profile grants at attempt 1 (memory, runtime, a GPU for the rules that run models).

A config with a published folder (models.source) that is not here is planned against
an empty stand-in of the folder: the file names its layout implies, no contents.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from klomflow.data.published.layout import PUBLISHED_FORGET_SETS, Source
from klomflow.data.shapes import dataset_shape
from klomflow.jobs.budget_costs import Job, Run, job_cost
from klomflow.jobs.budget_units import MiB
from klomflow.training.plans import model_size

GiB = 1 << 30


@dataclass
class RuleBudget:
    rule: str
    jobs: int = 0
    local: bool = False
    written_bytes: int = 0
    peak_bytes: int = 0  # the largest of its jobs'
    longest_seconds: float = 0.0  # the longest of its jobs'
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    on_gpu: bool = False
    basis: set = field(default_factory=set)


def _stand_in_source(config: dict, folder: Path) -> None:
    """An empty folder with the published files a config's validation and plan look for."""
    source = Source.from_setting(config["models"]["source"], folder)
    models = config["models"]
    n_oracles = models["n_oracles"] + models["n_holdout_oracles"]
    paths = [source.original_checkpoint(k) for k in range(models["n_originals"])]
    for kind in ("margins", "logits"):
        paths += [
            p for ps in source.original_files(models["n_originals"], kind).values() for p in ps
        ]
    for spec in config["forget_sets"].values():
        if spec.get("kind") == "published":
            # Validation reads the indices: the published size (other contents: a warning).
            indices = source.forget_set_file(spec["id"])
            indices.parent.mkdir(parents=True, exist_ok=True)
            np.save(indices, np.arange(PUBLISHED_FORGET_SETS[spec["id"]][0], dtype=np.int64))
            for kind in ("margins", "logits"):
                files = source.oracle_files(spec["id"], n_oracles, kind)
                paths += [p for ps in files.values() for p in ps]
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()


@contextmanager
def planned_workflow(snakefile: Path, folder: Path, config_file: Path, quiet: bool = True):
    """Snakemake's workflow with its DAG of every job (forceall: whatever exists in
    `folder`), through its API; nothing runs. Snakemake keeps global state per process:
    plan once per process (tests/job_params.py uses this too)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    output = OutputSettings(quiet={Quietness.ALL}) if quiet else OutputSettings()
    with SnakemakeApi(output) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[config_file]),
            snakefile=snakefile,
            workdir=folder,
        )
        workflow_api.dag(DAGSettings(forceall=True))
        workflow = workflow_api._workflow
        workflow._prepare_dag(
            forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True
        )
        workflow._build_dag()
        yield workflow


def plan_jobs(snakefile: Path, config_file: Path) -> tuple[list[Job], dict]:
    """(every job of the DAG, the resolved config), planned in a scratch folder."""
    from snakemake.exceptions import MissingInputException

    config = yaml.safe_load(Path(config_file).read_text())
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = config.get("models", {}).get("source")
        if source and source.get("layout", "train") != "train":
            path = Path(source["path"])
            if not (path if path.is_absolute() else Path(config_file).parent / path).is_dir():
                config = copy.deepcopy(config)
                config["models"]["source"]["path"] = str(scratch / "published")
                _stand_in_source(config, scratch)
        planned_config = scratch / "config.yaml"
        planned_config.write_text(yaml.safe_dump(config, sort_keys=False))
        for _ in range(8):  # a published file the plan asks for: add it to the stand-in
            try:
                # What planning prints (e.g. the stand-in's warnings) stays out of the table.
                with (
                    redirect_stdout(io.StringIO()),
                    planned_workflow(snakefile, scratch, planned_config) as workflow,
                ):
                    return _jobs(workflow), copy.deepcopy(dict(workflow.config))
            except MissingInputException as error:
                missing = [Path(f) for f in error.files if str(scratch) in str(Path(f).resolve())]
                if not missing:
                    raise
                for path in missing:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
    raise RuntimeError("planning kept asking for published files")


def _jobs(workflow) -> list[Job]:
    """The DAG's jobs, in the order the workflow defines their rules (stage by stage)."""
    order = {rule.name: index for index, rule in enumerate(workflow.rules)}
    local = {
        rule.name for rule in workflow.rules if rule.name in workflow._localrules or rule.norun
    }
    return [
        Job(
            rule=job.rule.name,
            wildcards=dict(job.wildcards.items()),
            params=dict(job.params.items()),
            inputs=dict(job.input.items()),
            outputs=dict(job.output.items()) or dict(enumerate(job.output)),
            local=job.rule.name in local,
            logs=list(job.log),
        )
        for job in sorted(workflow.dag.jobs, key=lambda job: order[job.rule.name])
    ]


def _run(config: dict, gpu: bool = True) -> Run:
    shape = dataset_shape(config["dataset"])
    return Run(config, shape, model_size(config["model"], shape.input_shape, shape.n_classes), gpu)


def budget(jobs: list[Job], config: dict, gpu: bool = True) -> dict[str, RuleBudget]:
    """{rule: RuleBudget} in the order rules first appear."""
    run = _run(config, gpu)
    rules: dict[str, RuleBudget] = {}
    for job in jobs:
        cost = job_cost(job, run)
        entry = rules.setdefault(job.rule, RuleBudget(job.rule, local=job.local))
        entry.jobs += 1
        entry.written_bytes += sum(cost.written_bytes.values())
        entry.peak_bytes = max(entry.peak_bytes, cost.peak_bytes)
        entry.longest_seconds = max(entry.longest_seconds, cost.seconds)
        entry.on_gpu = cost.on_gpu
        if cost.on_gpu:
            entry.gpu_hours += cost.seconds / 3600
        else:
            entry.cpu_hours += cost.seconds / 3600
        entry.basis.update(cost.basis)
    return rules


# ---- What a profile grants ------------------------------------------------------------------


def _evaluate(value, attempt: int = 1):
    """A profile resource at `attempt`: a Python expression of attempt, else the string."""
    if not isinstance(value, str):
        return value
    try:
        return eval(value, {"__builtins__": {}}, {"attempt": attempt, "threads": 1})
    except Exception:
        return value


def profile_grants(profile: Path, rule: str, attempt: int = 1) -> dict:
    """{mem_mb, runtime (minutes), gpu} a Snakemake profile grants `rule` at `attempt`."""
    settings = yaml.safe_load((Path(profile) / "config.yaml").read_text())
    granted = dict(settings.get("default-resources") or {})
    granted.update((settings.get("set-resources") or {}).get(rule) or {})
    return {
        key: _evaluate(granted.get(key, default), attempt)
        for key, default in (("mem_mb", 0), ("runtime", 0), ("gpu", 0))
    }


def over_grants(rules: dict[str, RuleBudget], profile: Path) -> list[str]:
    """A line per rule whose need exceeds what `profile` grants at attempt 1."""
    problems = []
    for entry in rules.values():
        if entry.local or entry.rule == "all":
            continue  # localrules run on the submit host, outside SLURM's grants
        granted = profile_grants(profile, entry.rule)
        if entry.peak_bytes > granted["mem_mb"] * MiB:
            problems.append(
                f"{entry.rule}: needs {entry.peak_bytes / MiB:,.0f} MiB of memory, "
                f"the profile grants {granted['mem_mb']:,} (mem_mb at attempt 1)"
            )
        if entry.longest_seconds > granted["runtime"] * 60:
            problems.append(
                f"{entry.rule}: needs {entry.longest_seconds / 60:,.0f} minutes, "
                f"the profile grants {granted['runtime']} (runtime at attempt 1)"
            )
        if entry.on_gpu and not granted["gpu"]:
            problems.append(f"{entry.rule}: runs models but the profile grants it no GPU")
    return problems


# ---- The table --------------------------------------------------------------------------------


def _size(n_bytes: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes:.0f} B"


def table(rules: dict[str, RuleBudget]) -> str:
    lines = [
        "| rule | jobs | where | disk written | peak memory (a job) | longest job | "
        "GPU-hours | CPU-hours |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for e in rules.values():
        where = "login node" if e.local else ("GPU" if e.on_gpu else "CPU")
        lines.append(
            f"| {e.rule} | {e.jobs:,} | {where} | {_size(e.written_bytes)} | "
            f"{_size(e.peak_bytes)} | {e.longest_seconds / 60:,.1f} min | "
            f"{e.gpu_hours:,.1f} | {e.cpu_hours:,.2f} |"
        )
    everything = list(rules.values())
    lines.append(
        f"| total | {sum(e.jobs for e in everything):,} | | "
        f"{_size(sum(e.written_bytes for e in everything))} | "
        f"{_size(max(e.peak_bytes for e in everything))} (largest) | | "
        f"{sum(e.gpu_hours for e in everything):,.1f} | "
        f"{sum(e.cpu_hours for e in everything):,.2f} |"
    )
    return "\n".join(lines)


def job_predictions(jobs: list[Job], config: dict, gpu: bool = True) -> list[dict]:
    """Per job: rule, outputs {name: path}, logs, predicted bytes per output and peak bytes
    (what tests/test_budget.py compares with a run's files and logged peak memory)."""
    run = _run(config, gpu)
    predictions = []
    for job in jobs:
        cost = job_cost(job, run)
        predictions.append(
            {
                "rule": job.rule,
                "outputs": job.outputs,
                "logs": job.logs,
                "written_bytes": cost.written_bytes,
                "peak_bytes": cost.peak_bytes,
            }
        )
    return predictions


def report(
    snakefile: Path,
    config_file: Path,
    profile: Path | None = None,
    jobs_json: Path | None = None,
    gpu: bool = True,
) -> str:
    jobs, config = plan_jobs(snakefile, config_file)
    if jobs_json is not None:
        Path(jobs_json).write_text(json.dumps(job_predictions(jobs, config, gpu)))
    rules = budget(jobs, config, gpu)
    where = "on GPUs" if gpu else "on CPUs (--no-gpu)"
    text = [
        f"klomflow budget of {config_file}: the rules that run models run {where}; "
        "sizes in binary units (GiB = 2^30 bytes), memory = a job's peak resident memory",
        "",
        table(rules),
        "",
        "Bases (each estimate and per-unit cost, and its source):",
    ]
    text += [f"- {line}" for line in sorted(set().union(*(e.basis for e in rules.values())))]
    if profile is not None:
        problems = over_grants(rules, profile)
        text += ["", f"Against the profile {profile} (attempt 1):"]
        text += [f"- {line}" for line in problems] or ["- every rule fits what it grants"]
    return "\n".join(text)
