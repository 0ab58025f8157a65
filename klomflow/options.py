"""Typed config sections: the one place that states each optional key's default and choices.

klomflow.config fills a config's missing keys from these dataclasses
(`section_defaults`), and the code that uses a section builds it from the same
class (Recipe for `train`, KlomOptions for `klom`), so a default cannot differ
between the two. A key with a fixed set of values is typed `Literal[...]`;
`choices` reads the list back (config.schema.yaml repeats it for users, and a
test checks that the two agree). Light on purpose: no torch, so planning the
workflow does not pay for it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Literal


def choices(cls, name: str) -> tuple:
    """The values a `Literal`-typed field of dataclass `cls` may take."""
    return typing.get_args(typing.get_type_hints(cls)[name])


def section_defaults(cls) -> dict:
    """Every field of `cls` at its default, as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cls())))


@dataclass(frozen=True)
class DatasetOptions:
    """`dataset`'s optional keys (`name` is required; see the schema).

    Two more are read with their default where absent, and not filled in, so that
    a run from before they existed keeps its parameters (and its results):
    `verify_checksums` (true) and `labels` (fine; coarse for CIFAR-100 superclasses).
    """

    val_fraction: float = 0.2  # digits: the seeded share of points held out for validation
    split_seed: int = 0
    data_dir: str = "data"


@dataclass(frozen=True)
class ModelOptions:
    """`model`'s optional keys."""

    hidden: tuple = (256,)  # the MLP's hidden widths


@dataclass(frozen=True)
class Recipe:
    """`train`: the training recipe shared by originals, oracles and subset models."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum (Adam uses its own betas)
    nesterov: bool = False
    weight_decay: float = 5e-4  # L2 coefficient, applied by the optimiser
    schedule: Literal["constant", "triangular", "cosine"] = "triangular"
    peak_epoch: float = 5  # triangular: epoch at which the rate peaks
    label_smoothing: float = 0.0
    # How a job runs its models (klomflow/training/ensemble.py): together in one batched pass, or
    # one at a time; each model's training is the same either way.
    ensemble: bool = True

    @classmethod
    def from_config(cls, train_config: dict) -> Recipe:
        return cls(**train_config)


@dataclass(frozen=True)
class ModelsOptions:
    """`models`' optional keys (the model counts are required)."""

    seeds_per_job: int = 25
    base_seed: int = 0
    save_unlearned_checkpoints: bool = False
    resume_checkpoint_seconds: float = 60


@dataclass(frozen=True)
class DatamodelsOptions:
    """`datamodels`' optional keys (`seeds_per_job` falls back to models.seeds_per_job)."""

    n_subset_models: int = 1000
    subset_fraction: float = 0.5
    ridge: float = 0.03


@dataclass(frozen=True)
class KlomOptions:
    """`klom`: how per-point KLOM is computed (klomflow/metrics/klom.py)."""

    bins: int = 20
    eps: float = 1e-5
    clip: float = 100.0
    binning: Literal["reference", "inclusive"] = "reference"
    direction: Literal["unlearned_to_oracle", "oracle_to_unlearned"] = "unlearned_to_oracle"

    def __post_init__(self):
        if self.binning not in BINNINGS:
            raise ValueError(f"klom.binning must be one of {BINNINGS}, got {self.binning!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"klom.direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.bins < 1 or self.eps <= 0 or self.clip <= 0:
            raise ValueError("klom.bins, klom.eps and klom.clip must be positive")


@dataclass(frozen=True)
class PaperOptions:
    """`paper`: the paper tables and report (klomflow/reporting/selection.py and
    figures.py)."""

    resamples: int = 200
    resample_seed: int = 0
    delete_fraction: float = 0.5
    interval: Literal["jackknife", "bootstrap"] = "jackknife"
    histogram_points: int = 3


@dataclass(frozen=True)
class ExplorerOptions:
    """`explorer`: which points of results/explorer.html carry margin histograms and images
    (klomflow/reporting/explorer_data.py); every point's KLOM is in the page."""

    # Every point up to this many evaluation points; above it a bounded set: the forget
    # set, the `worst_points` highest KLOM per setting and split, and `sample_points` drawn
    # at random (seed: models.base_seed).
    all_points_up_to: int = 5000
    worst_points: int = 12
    sample_points: int = 500
    # Every setting up to this many per forget set; above it the noise floor and each
    # method's selected setting (a grid's every value would multiply the page's size).
    all_settings_up_to: int = 30


@dataclass(frozen=True)
class PrivacyOptions:
    """`privacy`: the attack metrics (klomflow/metrics/privacy/, docs/privacy.md); none unless
    `metrics` lists them."""

    metrics: tuple = ()  # any of competition, ulira, lira
    delta: float = 1e-5
    epsilon_cap: float = 50.0
    thresholds_per_unit: int = 100
    buffer: float = 2.0
    folds: int = 5
    variance: Literal["per_example", "fixed", "pooled", "global"] = "per_example"  # global: pooled
    max_points: int = 1000
    subset_seed: int = 0


OPTIMIZERS = choices(Recipe, "optimizer")
SCHEDULES = choices(Recipe, "schedule")
BINNINGS = choices(KlomOptions, "binning")
DIRECTIONS = choices(KlomOptions, "direction")
INTERVAL_SCHEMES = choices(PaperOptions, "interval")

# Config section -> the dataclass of its optional keys, in the order a resolved config lists them.
SECTIONS = {"dataset": DatasetOptions, "model": ModelOptions, "train": Recipe,
            "models": ModelsOptions, "datamodels": DatamodelsOptions, "klom": KlomOptions,
            "paper": PaperOptions, "privacy": PrivacyOptions, "explorer": ExplorerOptions}
