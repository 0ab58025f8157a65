"""The `klomflow` command: `klomflow init FOLDER` writes a folder from which a user scores
their own method with klomflow's workflow, used as a Snakemake module.

The folder holds only what is the user's: a Snakefile of a few lines, a config that states
what differs from the defaults (klomflow/config/default.yaml, copied in as comments), a
method with its own test, and the workflow profile (reruns follow params). Results land
there; nothing of klomflow's source is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import klomflow

PACKAGE = Path(klomflow.__file__).resolve().parent
# Where `pip install` (not -e) puts the workflow's files (pyproject.toml, data-files).
INSTALLED_WORKFLOW = Path(sys.prefix) / "share" / "klomflow" / "workflow"

SNAKEFILE = '''\
# klomflow, used from this folder: its workflow is a Snakemake module, this folder holds the
# config, the methods and the results. Run `snakemake --cores all` here; on a cluster add
# `--profile <klomflow>/profiles/slurm` (docs/cluster.md).
configfile: "config.yaml"


module klomflow:
    # A local copy of klomflow's workflow; from GitHub instead:
    # snakefile: github("<owner>/klomflow", path="Snakefile", tag="<release>")
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from klomflow
'''

CONFIG = '''\
# What differs from klomflow's defaults. Every required section left out here is taken
# whole from the default config (below, commented out); a section given here is used as
# written, and `methods` and `forget_sets` replace the default's entries.
user_methods:
  my_method:
    path: methods/my_method.py

models:
  n_originals: 8
  n_oracles: 8
  n_holdout_oracles: 8
  seeds_per_job: 4

methods:
  do_nothing:
  my_method:
    lr: [0.001, 0.01]

# ---- the default config, for reference ----------------------------------------------
'''

METHOD = '''\
"""my_method: gradient ascent on the forget set, a starting point to replace with yours.

klomflow calls `unlearn(model, data, params)` with a private copy of an original model,
the data it may use (klomflow.unlearning.methods.base.UnlearningData) and the
hyperparameters, and scores the model it returns against oracles retrained without the
forget set.
"""

from klomflow.unlearning.methods.base import cross_entropy_epoch, sgd

# Read by klomflow without importing this file: every hyperparameter with its default (the
# config may set these and no others) and the method's flags.
SPEC = {
    "defaults": {"lr": 0.01, "epochs": 1, "batch_size": 64, "momentum": 0.0,
                 "weight_decay": 0.0},
    "class_only": False,
    "needs": [],
    "diagnostic": False,
}


def unlearn(model, data, params):
    optimizer = sgd(model, params)
    model.train()
    for _ in range(params["epochs"]):
        # Shuffled batches drawn from data.generator, the method's only source of randomness.
        cross_entropy_epoch(model, optimizer, data, data.forget_indices, params["batch_size"],
                            sign=-1.0)
    return model
'''

METHOD_TEST = '''\
"""my_method changes the weights of a small model (run: pytest tests/)."""

import sys
from pathlib import Path

import torch
from torch import nn

from klomflow.unlearning.methods.base import UnlearningData

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
import my_method  # noqa: E402


def test_my_method_changes_the_weights():
    generator = torch.Generator().manual_seed(0)
    train_x = torch.randn(40, 8, generator=generator)
    train_y = torch.randint(0, 3, (40,), generator=generator)
    data = UnlearningData(train_x=train_x, train_y=train_y,
                          forget_indices=torch.arange(10), retain_indices=torch.arange(10, 40),
                          n_classes=3, generator=generator, device=torch.device("cpu"))
    model = nn.Linear(8, 3)
    before = [p.detach().clone() for p in model.parameters()]
    params = dict(my_method.SPEC["defaults"], lr=0.1)
    after = my_method.unlearn(model, data, params)
    assert any(not torch.equal(a, b) for a, b in zip(before, after.parameters()))
'''


def workflow_snakefile() -> Path:
    """klomflow's Snakefile: the checkout's when the package runs from one, else the copy
    that `pip install` put under the environment's share/klomflow/workflow."""
    for candidate in (PACKAGE.parent / "Snakefile", INSTALLED_WORKFLOW / "Snakefile"):
        if candidate.is_file() and (candidate.parent / "rules").is_dir():
            return candidate
    raise SystemExit("klomflow: cannot find klomflow's workflow (a Snakefile beside rules/); "
                     "pass --workflow PATH/TO/klomflow/Snakefile")


def init(folder: Path, snakefile: Path) -> list[Path]:
    """Write the user folder; refuses to overwrite a file that exists."""
    default = (PACKAGE / "config" / "default.yaml").read_text()
    profile = snakefile.parent / "profiles" / "default" / "config.yaml"
    files = {
        "Snakefile": SNAKEFILE.format(snakefile=snakefile.resolve().as_posix()),
        "config.yaml": CONFIG + "".join(f"# {line}".rstrip() + "\n"
                                        for line in default.splitlines()),
        "methods/my_method.py": METHOD,
        "tests/test_my_method.py": METHOD_TEST,
        "profiles/default/config.yaml": profile.read_text(),
    }
    existing = [name for name in files if (folder / name).exists()]
    if existing:
        raise SystemExit(f"klomflow init: {folder} already holds {', '.join(existing)}; "
                         "nothing written")
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="klomflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("init", help="write a folder to score your own method from")
    make.add_argument("folder", type=Path)
    make.add_argument("--workflow", type=Path, default=None,
                      help="klomflow's Snakefile (default: this installation's)")
    price = commands.add_parser("budget", help="what a config will cost, per rule "
                                "(jobs, disk, memory, GPU- and CPU-hours), before it runs")
    price.add_argument("--configfile", type=Path, required=True)
    price.add_argument("--profile", type=Path, default=None,
                       help="a Snakemake profile folder: flag rules needing more than it grants")
    price.add_argument("--workflow", type=Path, default=None,
                       help="klomflow's Snakefile (default: this installation's)")
    price.add_argument("--jobs-json", type=Path, default=None,
                       help="also write every job's predicted bytes and peak memory here")
    price.add_argument("--no-gpu", action="store_true",
                       help="price the rules that run models on CPUs (as a digits run here)")
    arguments = parser.parse_args(argv)
    snakefile = arguments.workflow or workflow_snakefile()
    if arguments.command == "budget":
        from klomflow.jobs.budget import report

        print(report(snakefile, arguments.configfile, arguments.profile, arguments.jobs_json,
                     gpu=not arguments.no_gpu))
        return
    for path in init(arguments.folder, snakefile):
        print(f"wrote {path}")
    print(f"next: cd {arguments.folder} && snakemake --cores all "
          "(the method's own test: pytest tests, with pytest installed)")


if __name__ == "__main__":
    main()
