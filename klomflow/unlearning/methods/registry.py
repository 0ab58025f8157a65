"""Every unlearning method's name, hyperparameter defaults, version and flags, as plain data.

This module imports neither torch nor any implementation, so that planning the workflow
(config validation, rule params, the DAG) stays cheap; `MethodSpec.load()` imports the
implementation, which only the jobs that run a method need. Each implementation module
builds its `METHOD` from its entry here (`klomflow.unlearning.methods.base.implement`), so this is
the one place where a method's defaults and version are written.

Adding a method: an entry below and a module `klomflow/unlearning/methods/<name>.py` with
`METHOD = implement("<name>", unlearn)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MethodSpec:
    """What the workflow needs to know about a method without running it."""

    name: str
    # Every hyperparameter with its default; config keys outside it are errors. A
    # list-valued default is one value (a grid of it is a list of lists).
    defaults: dict = field(default_factory=dict)
    # Bump when a change can alter this method's output; it enters the unlearn
    # rule's params so Snakemake reruns exactly this method's jobs.
    version: str = "1"
    # Designed for forgetting a whole class: refuses other forget sets.
    class_only: bool = False
    # Extra inputs the workflow must provide in UnlearningData.extras.
    needs: tuple = ()
    # Uses oracles: an upper-bound diagnostic, not a competitor.
    diagnostic: bool = False
    # `unlearn` returns logits [n_points, n_classes] on data.eval_x (numpy
    # float32) instead of a model; the model's weights stay the original's.
    outputs_logits: bool = False
    # Hyperparameters that take one of a few texts: {name: allowed values}.
    choices: dict = field(default_factory=dict)
    # A method outside klomflow: where its code is (klomflow.unlearning.methods.user.UserSource);
    # None for the built-ins below. Its version is then a fingerprint of that code.
    source: object = None

    @property
    def module(self) -> str:
        """The implementation's module: one per method, named after it."""
        return f"klomflow.unlearning.methods.{self.name}"

    def load(self):
        """The implementation (`klomflow.unlearning.methods.base.Method`); imports torch."""
        if self.source is not None:
            return self.source.load_method(self)
        return importlib.import_module(self.module).METHOD


# What the workflow can put in UnlearningData.extras, for a method's `needs`: one rule's
# output each (rules/functions/unlearn.smk, extra_inputs).
EXTRA_INPUTS = ("holdout_oracle_logits", "datamodel_rows")


# The recipe of the Datamodel Matching paper (docs/methods.md), shared by oracle_matching and dmm.
MATCHING_DEFAULTS = {"forget_mult": 1.0, "retain_mult": 3.0, "lr": 5e-4, "lr_decay": 0.95,
                     "epochs": 5, "batch_size": 512}

# In the order of the tables. Each module's docstring says where a default departs
# from the authors' code and why.
SPECS = (
    MethodSpec("do_nothing"),
    MethodSpec("gradient_ascent", defaults={"lr": 0.01, "epochs": 3, "batch_size": 64,
                                            "momentum": 0.0, "weight_decay": 0.0}),
    MethodSpec("gradient_descent", defaults={"lr": 0.01, "epochs": 3, "batch_size": 64,
                                             "momentum": 0.9, "weight_decay": 5e-4}),
    MethodSpec("neggrad_plus", defaults={"beta": 0.99, "lr": 0.01, "epochs": 5,
                                         "batch_size": 64, "forget_batch_size": 64,
                                         "momentum": 0.9, "weight_decay": 5e-4}),
    MethodSpec("random_label", defaults={"lr": 0.01, "epochs": 5, "batch_size": 64,
                                         "forget_batch_size": 64, "momentum": 0.9,
                                         "weight_decay": 5e-4, "amnesiac": True}),
    MethodSpec("salun", defaults={"mask_ratio": 0.5, "lr": 0.013, "epochs": 5, "batch_size": 64,
                                  "forget_batch_size": 64, "momentum": 0.9,
                                  "weight_decay": 5e-4, "amnesiac": False}),
    # Version 2: the learning rate decays by lr_decay_rate after each of lr_decay_epochs
    # epochs (the authors' schedule); runs of at most 3 epochs are unchanged.
    MethodSpec("scrub", version="2",
               defaults={"lr": 0.01, "epochs": 3, "msteps": 2, "gamma": 0.99, "alpha": 0.001,
                         "temperature": 4.0, "batch_size": 128, "forget_batch_size": 32,
                         "momentum": 0.9, "weight_decay": 5e-4, "lr_decay_epochs": [3, 5, 9],
                         "lr_decay_rate": 0.1}),
    MethodSpec("bad_teaching", defaults={"lr": 1e-3, "epochs": 5, "batch_size": 64,
                                         "retain_fraction": 0.3, "temperature": 1.0}),
    MethodSpec("l1_sparse", defaults={"alpha": 0.02, "lr": 0.01, "epochs": 5, "batch_size": 64,
                                      "momentum": 0.9, "weight_decay": 5e-4}),
    # Version 2: importance_order offers the authors' order of the full-data importances
    # (retain set, then forget set); the default order is unchanged.
    MethodSpec("ssd", version="2",
               defaults={"alpha": 100.0, "lambda": 1.0, "batch_size": 128,
                         "importance_order": "index"},
               choices={"importance_order": ("index", "retain_then_forget")}),
    MethodSpec("fisher_forgetting", defaults={"alpha": 1e-6, "batch_size": 64,
                                              "average_over_inputs": True,
                                              "zero_forget_classes": True}),
    MethodSpec("pbu", class_only=True,
               defaults={"alpha": 721.0, "beta": 90.0, "gamma": 4001.0, "lr": 2e-3, "epochs": 5,
                         "batch_size": 64, "fisher_batch_size": 64}),
    # retain_per_class 0 uses the whole retain set; the authors take the first 1000
    # (notebook) or 500 (SSD repository's copy) retain points of each class.
    MethodSpec("unsir", class_only=True,
               defaults={"noise_size": 64, "noise_steps": 40, "noise_lr": 0.1, "noise_l2": 0.1,
                         "noise_copies": 4, "impair_lr": 5e-3, "impair_epochs": 1,
                         "repair_lr": 1e-3, "repair_epochs": 1, "batch_size": 64,
                         "retain_per_class": 0}),
    # Label-free; repair (LAF+R) reads the retain labels. remain_vae_data "train" is the
    # authors' code (h_r on all of D), "retain" the paper's reading (the retain set).
    MethodSpec("laf", defaults={"latent_dims": 8, "epochs": 100, "lr_ue": 5e-5, "lr_ra": 1e-4,
                                "temperature": 5.0, "batch_size": 32, "vae_epochs": 10,
                                "vae_lr": 1e-3, "vae_kl_weight": 0.025,
                                "remain_vae_data": "train", "repair": False,
                                "repair_epochs": 10, "repair_lr": 1e-4},
               choices={"remain_vae_data": ("train", "retain")}),
    # Version 2: each model matches its own random subset of the held-out oracles,
    # drawn from its generator (was: the first n_oracles for every model).
    MethodSpec("oracle_matching", version="2", needs=("holdout_oracle_logits",),
               diagnostic=True, defaults={"n_oracles": 10, **MATCHING_DEFAULTS}),
    # multiplier scales the datamodel correction (1 = the datamodels as fitted).
    # Version 2 (both): they read the forget set's rows of the datamodels (datamodel_rows,
    # [|F|, n_points, n_classes]) instead of the whole table.
    MethodSpec("dmm", version="2", needs=("datamodel_rows",),
               defaults={**MATCHING_DEFAULTS, "multiplier": 1.0}),
    MethodSpec("dm_direct", version="2", needs=("datamodel_rows",), outputs_logits=True,
               defaults={"multiplier": 1.0}),
)

REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in SPECS}
