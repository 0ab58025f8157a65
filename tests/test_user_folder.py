"""A method that lives outside klomflow, scored from the user's own folder.

klomflow is installed from a wheel into a fresh environment (never the checkout), the
folder comes from `klomflow init` and uses the installed workflow as a Snakemake module,
and its method imports torch at its top and a helper of its own. After the first run,
an edit to the method or to its helper reruns exactly that method's unlearning jobs and
what follows from them, and a comment-only edit reruns nothing.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow import REPOSITORY, parse_job_stats

pytestmark = pytest.mark.slow

CONFIG = """\
user_methods:
  my_method:
    path: methods/my_method.py
model:
  name: mlp
  hidden: [16]
train:
  epochs: 2
  batch_size: 128
  lr: 0.1
  ensemble: false
models:
  n_originals: 4
  n_oracles: 4
  n_holdout_oracles: 4
  seeds_per_job: 4
forget_sets:
  random_30:
    kind: random
    size: 30
    seed: 1
methods:
  do_nothing:
  my_method:
    lr: 0.05
klom:
  bins: 10
"""

METHOD = '''\
"""Gradient ascent on the forget set, its step scaled by a helper."""

import torch
from torch.nn import functional as F

import helper

SPEC = {"defaults": {"lr": 0.01, "epochs": 1, "batch_size": 16}}


def unlearn(model, data, params):
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"] * helper.SCALE)
    model.train()
    for _ in range(params["epochs"]):
        order = torch.randperm(len(data.forget_indices), generator=data.generator)
        for start in range(0, len(order), params["batch_size"]):
            rows = data.forget_indices[order[start:start + params["batch_size"]]]
            loss = -F.cross_entropy(model(data.train_x[rows]), data.train_y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model
'''

# What an edit of a user method may rerun: its unlearning jobs and what reads them.
# The explorer page reads every method's margins and KLOM, so it is rebuilt too.
DOWNSTREAM = {"unlearn", "gather_unlearned_margins", "compute_klom", "reduce_klom",
              "tabulate_accuracy", "tabulate_class_accuracy", "resample_klom",
              "make_paper_tables", "plot_forget_set", "build_explorer", "summarise_for_report",
              "all"}
MARGINS = "results/margins/unlearned/random_30/my_method"


def run(command, folder, environment, check=True):
    result = subprocess.run(command, cwd=folder, env=environment, capture_output=True,
                            text=True, timeout=1500)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(folder, environment, python): klomflow from a wheel, a folder made by klomflow init,
    and one complete run in it."""
    scratch = tmp_path_factory.mktemp("user")
    wheels = scratch / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(REPOSITORY)], check=True, capture_output=True)
    # torch and the rest come from this Python's packages; klomflow only from the wheel.
    venv.create(scratch / "env", system_site_packages=True, with_pip=True)
    python = str(scratch / "env" / "bin" / "python")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment["PATH"] = f"{scratch / 'env' / 'bin'}{os.pathsep}{environment['PATH']}"
    run([python, "-m", "pip", "install", "--no-deps", "-q", *map(str, wheels.glob("*.whl"))],
        scratch, environment)
    folder = scratch / "mine"
    run([str(scratch / "env" / "bin" / "klomflow"), "init", str(folder)], scratch, environment)
    (folder / "config.yaml").write_text(CONFIG)
    (folder / "methods" / "my_method.py").write_text(METHOD)
    (folder / "methods" / "helper.py").write_text("SCALE = 1.0\n")
    run([python, "-m", "snakemake", "--cores", "2"], folder, environment)
    return folder, environment, python


def planned(user) -> dict:
    folder, environment, python = user
    result = run([python, "-m", "snakemake", "--dry-run", "--quiet", "rules"], folder,
                 environment)
    return parse_job_stats(result.stdout + result.stderr)


def margins(folder) -> np.ndarray:
    return np.concatenate([np.load(path) for path in sorted((folder / MARGINS).glob("*.npy"))])


def test_the_installed_klomflow_scores_the_users_method(user):
    folder, environment, python = user
    where = run([python, "-c", "import klomflow; print(klomflow.__file__)"], folder,
                environment).stdout.strip()
    assert Path(where).is_relative_to(Path(python).parents[1]), where
    assert not Path(where).is_relative_to(REPOSITORY)
    snakefile = (folder / "Snakefile").read_text()
    assert str(Path(python).parents[1] / "share" / "klomflow" / "workflow") in snakefile
    table = pd.read_parquet(folder / "results" / "tables" / "klom.parquet")
    assert {"do_nothing", "my_method"} <= set(table["method"])
    # Results are the user's: nothing was written beside klomflow's workflow.
    assert not (Path(python).parents[1] / "share" / "klomflow" / "workflow" / "results").exists()


def test_the_users_report_opens_on_their_results(user):
    """From the user's folder, `snakemake --report` opens on klomflow's description with the
    KLOM table, their method in it: the report has metadata (numbers, which Snakemake shows
    as they are) and the description of klomflow's installed workflow."""
    folder, environment, python = user
    run([python, "-m", "snakemake", "--report", "results/report.html"], folder, environment)
    page = (folder / "results" / "report.html").read_text()
    metadata = json.loads(re.search(r"var metadata = (\{.*?\})\s*;?\s*\n", page).group(1))
    assert metadata["Forget sets"] == 1  # random_30, the user's config
    assert all(isinstance(value, int) for value in metadata.values()) and len(metadata) == 4
    description = json.loads(re.search(r"workflow_desc = (\".*?(?<!\\)\")", page).group(1))
    assert 'data-forget-set="random_30"' in description
    assert 'data-method="my_method"' in description and "explorer.html" in description


def edit_and_check(user, path: Path, old: str, new: str):
    folder = user[0]
    before = margins(folder)
    path.write_text(path.read_text().replace(old, new))
    jobs = planned(user)
    assert set(jobs) <= DOWNSTREAM, jobs
    assert jobs["unlearn"] == 1  # my_method on random_30, one shard; not do_nothing's
    run([user[2], "-m", "snakemake", "--cores", "2"], folder, user[1])
    assert not np.array_equal(margins(folder), before)


def test_an_edit_to_the_method_reruns_its_jobs_alone(user):
    method = user[0] / "methods" / "my_method.py"
    edit_and_check(user, method, "lr=params[\"lr\"] * helper.SCALE",
                   "lr=2 * params[\"lr\"] * helper.SCALE")


def test_an_edit_to_a_helper_it_imports_reruns_its_jobs_alone(user):
    edit_and_check(user, user[0] / "methods" / "helper.py", "SCALE = 1.0", "SCALE = 3.0")


def test_a_comment_only_edit_reruns_nothing(user):
    method = user[0] / "methods" / "my_method.py"
    method.write_text("# a comment\n" + method.read_text().replace(
        "    model.train()\n", "    model.train()  # training mode\n"))
    helper = user[0] / "methods" / "helper.py"
    helper.write_text(textwrap.dedent('"""A helper."""\n') + helper.read_text())
    assert planned(user) == {}
