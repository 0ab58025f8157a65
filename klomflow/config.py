"""Configuration: schema validation, checks that need the data, defaults and method grids.

Everything that can be wrong in config.yaml is caught here, before any job
runs, with a message that names the key at fault.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from klomflow.forget_sets import ForgetSetError, make_forget_set

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Defaults for optional keys; the schema says which keys exist at all.
DEFAULTS = {
    "dataset": {"val_fraction": 0.2, "split_seed": 0, "data_dir": "data"},
    "model": {"hidden": [256]},
    "train": {
        "epochs": 30, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "nesterov": False, "weight_decay": 5e-4, "schedule": "triangular", "peak_epoch": 5,
        "label_smoothing": 0.0,
    },
    "models": {
        "seeds_per_job": 25, "base_seed": 0, "save_unlearned_checkpoints": False,
        "resume_checkpoint_seconds": 60,
    },
    "datamodels": {"n_subset_models": 1000, "subset_fraction": 0.5, "ridge": 0.03},
    "klom": {"bins": 20, "eps": 1e-5, "clip": 100.0, "binning": "reference",
             "direction": "unlearned_to_oracle"},
    # Paper tables and report (klomflow/paper.py, klomflow/figures.py).
    "paper": {"resamples": 200, "resample_seed": 0, "delete_fraction": 0.5, "interval": "jackknife",
              "histogram_points": 3},
    # Privacy-attack metrics (klomflow/privacy.py, ../shared/PRIVACY.md); none unless listed.
    "privacy": {"metrics": [], "delta": 1e-5, "epsilon_cap": 50.0, "thresholds_per_unit": 100,
                "buffer": 2.0, "folds": 5, "variance": "per_example", "max_points": 1000,
                "subset_seed": 0},
}
# Method-entry keys that are not hyperparameters.
RESERVED_METHOD_KEYS = ("method", "forget_sets")
# Row names of the tables that no method entry may take.
RESERVED_ENTRY_NAMES = ("oracle_holdout", "original", "oracle")
# Nominal training-set sizes, used to check forget sets before a dataset is downloaded.
NOMINAL_SIZES = {"cifar10": (50000, 10), "cifar100": (50000, 100), "mnist": (60000, 10),
                 "fashion_mnist": (60000, 10)}


class ConfigError(ValueError):
    pass


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def check_schema(config: dict) -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    messages = []
    for error in errors:
        # oneOf failures hide the useful part (which key is unknown) in the context.
        detail = error.message
        if error.validator == "oneOf" and error.context:
            detail = "; ".join(sorted({sub.message for sub in error.context}))
        messages.append(f"{_key_path(error)}: {detail}")
    raise ConfigError("invalid config:\n  " + "\n  ".join(messages))


def with_defaults(config: dict) -> dict:
    """A copy of `config` with every optional section key filled in."""
    resolved = json.loads(json.dumps(config))
    for section, defaults in DEFAULTS.items():
        resolved[section] = defaults | (resolved.get(section) or {})
    return resolved


def stable_hash(payload, length: int = 10) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_seed(base_seed: int, *parts) -> int:
    """A 31-bit seed derived from the base seed and a description of the model."""
    return int(stable_hash([base_seed, *parts], length=8), 16) & 0x7FFFFFFF


def training_seed(config: dict, role: str, forget_set: str | None, index: int) -> int:
    """Seed of model `index` of a role; oracles of each forget set get their own seeds."""
    return model_seed(config["models"]["base_seed"], role, forget_set or "", index)


@dataclass(frozen=True)
class MethodSetting:
    """One grid point of one method entry."""

    entry: str  # the entry's name in config.yaml; results are filed under it
    method: str  # the implementation in klomflow.methods.METHODS
    params: dict  # every hyperparameter, defaults filled in
    config_id: str  # short hash of method + params: stable across runs and configs
    forget_sets: tuple  # the forget sets this setting runs on


def _check_param(key: str, value, default):
    """Coerce `value` to the type of `default` or fail naming `key`."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads 1e-3 as text; write 1.0e-3)" if isinstance(value, str) else ""
            raise ConfigError(f"{key}: expected a number, got {value!r}{hint}")
        if isinstance(default, int) and not float(value).is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key}: expected text, got {value!r}")
    return value


def method_settings(config: dict, methods=None) -> list[MethodSetting]:
    """Expand every method entry's grid into MethodSettings (list values are grids)."""
    if methods is None:
        from klomflow.methods import METHODS as methods
    settings = []
    all_forget_sets = tuple(config["forget_sets"])
    for entry, raw in config["methods"].items():
        if entry in RESERVED_ENTRY_NAMES:
            raise ConfigError(f"methods.{entry}: the name is reserved for a reference row")
        raw = dict(raw or {})
        method_name = raw.pop("method", entry)
        if method_name not in methods:
            raise ConfigError(
                f"methods.{entry}: unknown method {method_name!r}; known: {sorted(methods)}"
            )
        method = methods[method_name]
        forget_sets = raw.pop("forget_sets", None)
        forget_sets = all_forget_sets if forget_sets is None else tuple(forget_sets)
        for name in forget_sets:
            if name not in config["forget_sets"]:
                raise ConfigError(f"methods.{entry}.forget_sets: unknown forget set {name!r}")
        unknown = sorted(set(raw) - set(method.defaults))
        if unknown:
            raise ConfigError(
                f"methods.{entry}.{unknown[0]}: unknown hyperparameter of {method_name}; "
                f"known: {sorted(method.defaults)}"
            )
        grid = {}
        for name, default in method.defaults.items():
            values = raw.get(name, default)
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ConfigError(f"methods.{entry}.{name}: an empty grid")
            grid[name] = [_check_param(f"methods.{entry}.{name}", v, default) for v in values]
        for combination in itertools.product(*grid.values()):
            params = dict(zip(grid, combination))
            config_id = stable_hash({"method": method_name, "params": params})
            settings.append(MethodSetting(entry, method_name, params, config_id, forget_sets))
    return settings


def training_labels(config: dict, base_dir=".") -> tuple[np.ndarray | None, int, int]:
    """(training labels or None, n_train, n_classes) for checks before any job runs.

    Torchvision datasets that are not downloaded yet are checked against their
    nominal sizes; the forget-set rule checks again against the real labels.
    """
    from klomflow.datasets import TORCHVISION_DATASETS, load_dataset

    dataset = config["dataset"]
    if dataset["name"] in TORCHVISION_DATASETS:
        try:
            data_dir = Path(base_dir) / dataset["data_dir"]
            loaded = load_dataset(dataset | {"data_dir": str(data_dir)})
        except FileNotFoundError:
            n_train, n_classes = NOMINAL_SIZES[dataset["name"]]
            return None, n_train, n_classes
    else:
        loaded = load_dataset(dataset)
    return loaded.train_y.numpy(), loaded.n_train, loaded.n_classes


def validate(config: dict, base_dir=".", methods=None) -> dict:
    """Check `config` completely and return it with defaults filled in.

    Raises ConfigError naming the key at fault.
    """
    check_schema(config)
    resolved = with_defaults(config)
    check_schema(resolved)
    if resolved["dataset"]["name"] == "digits" and resolved["model"]["name"] == "resnet9":
        raise ConfigError("model.name: resnet9 needs image inputs; digits are flat 64-vectors")
    labels, n_train, n_classes = training_labels(resolved, base_dir)
    if labels is None:  # nominal check only: no label -> use a fake label array of the right size
        labels = np.arange(n_train) % n_classes
    for name, spec in resolved["forget_sets"].items():
        if spec["kind"] == "class" and spec["label"] >= n_classes:
            raise ConfigError(
                f"forget_sets.{name}.label={spec['label']}: the dataset has classes "
                f"0..{n_classes - 1}"
            )
        try:
            make_forget_set(name, spec, labels, base_dir)
        except ForgetSetError as error:
            raise ConfigError(str(error)) from None
    settings = method_settings(resolved, methods)
    if methods is None:
        from klomflow.methods import METHODS as methods
    for setting in settings:
        method = methods[setting.method]
        if method.class_only:
            for name in setting.forget_sets:
                if resolved["forget_sets"][name]["kind"] != "class":
                    raise ConfigError(
                        f"methods.{setting.entry}: {setting.method} forgets whole classes only, "
                        f"but forget set {name!r} is of kind "
                        f"{resolved['forget_sets'][name]['kind']!r}; restrict the entry with "
                        f"`forget_sets: [...]`"
                    )
    return resolved


def load(path, base_dir=None) -> dict:
    """Read and validate a config file."""
    path = Path(path)
    with open(path) as handle:
        config = yaml.safe_load(handle)
    return validate(config, base_dir if base_dir is not None else path.parent)
