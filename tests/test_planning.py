"""Planning the DAG imports no torch: every SLURM job start plans it again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow import REPOSITORY, SNAKEFILE, reordered, reversed_keys, tiny_config, write_config


def corrective_config() -> dict:
    return yaml.safe_load((REPOSITORY / "config" / "digits_corrective.yaml").read_text())


@pytest.mark.parametrize("config", [tiny_config, corrective_config])
def test_dry_run_plans_without_torch(tmp_path, config):
    # A `torch` that fails on import, first on the path: planning must never reach it.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('planning imported torch')\n")
    folder = tmp_path / "run"
    folder.mkdir()
    write_config(folder, config())
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(blocker), str(REPOSITORY), environment.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(folder), "--configfile", str(folder / "config.yaml"), "--dry-run"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "train_originals" in output and "unlearn" in output
    # The blocker works: importing torch through it fails.
    check = subprocess.run([sys.executable, "-c", "import torch"], env=environment,
                           capture_output=True, text=True)
    assert "planning imported torch" in check.stderr


# Every kind of forget set whose rule takes dict-valued params, keys in no particular order.
EVERY_KIND = {
    "pc1": {"size": 40, "component": 1, "kind": "datamodel_pc", "side": "both"},
    "neighbours": {"size": 30, "kind": "nearest_neighbors", "embedding": "penultimate",
                   "anchor": 6, "models": 2},
    "worst_inout": {"proxy": "inout_klom", "size": 30, "kind": "worst_case"},
    "worst_bilevel": {"size": 30, "kind": "worst_case", "proxy": "bilevel", "outer_steps": 2},
    "listed": {"path": "listed.txt", "kind": "indices"},
}


def every_rule_config() -> dict:
    """The tiny config with every stage switched on: derived forget sets, datamodel
    methods, held-out oracle logits (oracle_matching) and the privacy metrics."""
    config = tiny_config()
    config["forget_sets"] |= EVERY_KIND
    config["methods"] |= {"dmm": {"epochs": 1}, "dm_direct": None,
                          "oracle_matching": {"epochs": 1, "lr": 0.01}}
    config["datamodels"] = {"ridge": 0.1, "n_subset_models": 100, "subset_fraction": 0.5}
    config["privacy"] = {"max_points": 50, "metrics": ["competition", "ulira", "lira"]}
    config["paper"] = {"resamples": 20, "interval": "bootstrap"}
    return config


def planned_params(folder, config_names) -> dict:
    """{config name: {job: params as Snakemake records them}} (tests/job_params.py)."""
    environment = dict(os.environ, KLOMFLOW_JOB_SERVER="off")
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY),
                                                 environment.get("PYTHONPATH", "")])
    command = [sys.executable, str(REPOSITORY / "tests" / "job_params.py"), str(SNAKEFILE),
               str(folder), *(str(folder / name) for name in config_names)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    plans = json.loads(result.stdout.split("JOB_PARAMS ", 1)[1])
    return {Path(path).name: jobs for path, jobs in plans.items()}


def test_key_order_of_the_config_changes_no_jobs_params(tmp_path):
    """Snakemake compares a job's params by repr(), in which a dict's key order shows:
    the same config re-saved with sorted keys (yaml.safe_dump) or in another order must
    give every job the same params, or a finished run would plan its jobs again."""
    (tmp_path / "listed.txt").write_text("3\n1\n4\n")
    config = every_rule_config()
    write_config(tmp_path, config, "written.yaml")
    (tmp_path / "sorted.yaml").write_text(yaml.safe_dump(config))  # sorts keys at every depth
    write_config(tmp_path, reordered(config, reversed_keys), "reversed.yaml")
    plans = planned_params(tmp_path, ["written.yaml", "sorted.yaml", "reversed.yaml"])
    written = plans.pop("written.yaml")
    # Every rule that takes dict-valued params was planned (the check covers them all).
    rules = {job.split()[0] for job, params in written.items()
             if any(param.startswith("{") for param in params)}
    assert rules >= {"prepare_data", "make_forget_set", "derive_forget_set",
                     "train_originals", "train_oracles", "train_subset_models",
                     "fit_datamodels", "fit_margin_datamodel", "unlearn", "compute_klom",
                     "compute_noise_floor", "resample_klom", "resample_noise_floor",
                     "tabulate_accuracy", "tabulate_class_accuracy", "plot_forget_set",
                     "compute_privacy", "compute_privacy_reference"}, rules
    for name, jobs in plans.items():
        assert jobs.keys() == written.keys(), name
        changed = {job: sorted(set(jobs[job]) ^ set(written[job])) for job in written
                   if jobs[job] != written[job]}
        assert not changed, f"{name}: {len(changed)} jobs' params change, e.g. " \
                            f"{next(iter(changed.items()))}"
