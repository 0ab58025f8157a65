"""The typed values a resolved config turns into: model seeds and shards per role, and the
method settings (one per point of each method entry's grid, named by a config_id).

The raw config dict stops here: jobs call these once and pass the values down.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from klomflow.reporting.names import NOISE_FLOOR
from klomflow.seeds import model_seed, stable_hash
from klomflow.unlearning.methods.registry import REGISTRY, MethodSpec
from klomflow.unlearning.methods.user import (
    UserMethodError,
    locate_entry_point,
    locate_module,
    locate_path,
    read_user_method,
)

# Row names of the tables that no method entry may take.
RESERVED_ENTRY_NAMES = (NOISE_FLOOR, "original", "oracle")
# Method-entry keys that are not hyperparameters.
RESERVED_METHOD_KEYS = ("method", "forget_sets")
# How a user method names its code: exactly one of these (klomflow/unlearning/methods/user.py).
USER_METHOD_SOURCES = ("path", "module", "entry_point")


class ConfigError(ValueError):
    pass


def method_specs(config: dict, base_dir=".") -> dict[str, MethodSpec]:
    """Every method the config can name: the built-ins, then its `user_methods`, each read
    from its source without importing it (its version a fingerprint of its code).

    `base_dir` is the working folder, against which `path`s are read and where `module`s
    are looked for when not installed. Planning calls this once and every job that runs or
    reports a method once, so both see the same specs. Errors name the key and the file.
    """
    specs = dict(REGISTRY)
    for name, where in (config.get("user_methods") or {}).items():
        key = f"user_methods.{name}"
        given = [kind for kind in USER_METHOD_SOURCES if kind in (where or {})]
        if len(given) != 1:
            raise ConfigError(f"{key}: give exactly one of {', '.join(USER_METHOD_SOURCES)}; "
                              f"got {where!r}")
        kind, value = given[0], where[given[0]]
        if name in REGISTRY:
            raise ConfigError(f"{key}: {name!r} ({kind} {value!r}) is the name of a built-in "
                              f"method; choose another name")
        if name in RESERVED_ENTRY_NAMES:
            raise ConfigError(f"{key}: {name!r} ({kind} {value!r}) is reserved for a reference "
                              f"row of the tables; choose another name")
        key = f"{key}.{kind}"
        try:
            if kind == "path":
                source = locate_path(value, base_dir)
            elif kind == "module":
                source = locate_module(value, search=[base_dir])
            else:
                source = locate_entry_point(value, search=[base_dir])
            spec = read_user_method(name, source)
        except UserMethodError as error:
            raise ConfigError(f"{key}: {error}") from None
        reserved = [param for param in spec.defaults if param in RESERVED_METHOD_KEYS]
        if reserved:
            raise ConfigError(f"{key}: {source.file}: SPEC['defaults'] uses {reserved[0]!r}, "
                              f"a key of every method entry; rename the hyperparameter")
        specs[name] = spec
    return specs


def training_seed(config: dict, role: str, forget_set: str | None, index: int) -> int:
    """Seed of model `index` of a role; oracles of each forget set get their own seeds."""
    return model_seed(config["models"]["base_seed"], role, forget_set or "", index)


def is_imported(config: dict, role: str, forget_set: str | None = None) -> bool:
    """True when `role` ("original" or "oracle" of `forget_set`) comes from a published folder."""
    source = config["models"].get("source") or {"layout": "train"}
    if source["layout"] == "train" or role not in ("original", "oracle"):
        return False
    return role == "original" or config["forget_sets"][forget_set]["kind"] == "published"


def model_seeds(config: dict, role: str, forget_set: str | None, n_models: int) -> list[int]:
    """Seeds of the first `n_models` models of a role; -1 for imported models (none published)."""
    if is_imported(config, role, forget_set):
        return [-1] * n_models
    return [training_seed(config, role, forget_set, k) for k in range(n_models)]


def n_models(config: dict, role: str) -> int:
    """Models a role trains: originals, or scored plus held-out oracles per forget set."""
    models = config["models"]
    if role == "original":
        return models["n_originals"]
    if role == "subset":
        return config["datamodels"]["n_subset_models"]
    return models["n_oracles"] + models["n_holdout_oracles"]


def seeds_per_job(config: dict, role: str) -> int:
    """Models per job; subset models may have their own (they train on half the data)."""
    if role == "subset":
        return config["datamodels"].get("seeds_per_job") or config["models"]["seeds_per_job"]
    return config["models"]["seeds_per_job"]


def shard_indices(config: dict, role: str, shard: int) -> range:
    """Model indices of job `shard` of a role."""
    from klomflow.io import shard_ranges

    ranges = shard_ranges(n_models(config, role), seeds_per_job(config, role))
    if not 0 <= shard < len(ranges):
        raise ValueError(f"{role} shard {shard} does not exist; there are {len(ranges)}")
    return ranges[shard]


@dataclass(frozen=True)
class MethodSetting:
    """One grid point of one method entry."""

    entry: str  # the entry's name in config.yaml; results are filed under it
    implementation: str  # a built-in method's name or a user method's (method_specs)
    params: dict  # every hyperparameter, defaults filled in
    config_id: str  # short hash of method + params: stable across runs and configs
    forget_sets: tuple  # the forget sets this setting runs on


def _check_param(key: str, value, default, choices=None):
    """Coerce `value` to the type of `default` or fail naming `key`."""
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list like {default!r}, got {value!r}")
        # Elements take the type of the default's elements (any number when it is empty).
        element = default[0] if default else 0.0
        return [_check_param(f"{key}[{i}]", v, element) for i, v in enumerate(value)]
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


def _grid(value, default) -> list:
    """A hyperparameter's values: a list is a grid, except for a list-valued
    hyperparameter, whose grid is a list of lists."""
    if isinstance(default, list):
        is_grid = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        return value if is_grid else [value]
    return value if isinstance(value, list) else [value]


def _check_range(key: str, value):
    """Reject values no method can run with, by the hyperparameter's name.

    Learning rates (`lr`, `*_lr`) must be positive, epoch counts (`epochs`,
    `*_epochs`) at least 0 (0 leaves the model as it is) and batch sizes at
    least 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # list- and text-valued hyperparameters are checked by type only
    name = key.rsplit(".", 1)[-1]
    if (name == "lr" or name.endswith("_lr")) and not value > 0:
        raise ConfigError(f"{key}: a learning rate must be positive, got {value!r}")
    if (name == "epochs" or name.endswith("_epochs")) and value < 0:
        raise ConfigError(f"{key}: an epoch count cannot be negative, got {value!r}")
    if (name == "batch_size" or name.endswith("_batch_size")) and value < 1:
        raise ConfigError(f"{key}: a batch size must be at least 1, got {value!r}")
    return value


def _defined_in(method) -> str:
    """Where a user method's hyperparameters are declared, for messages; "" for a built-in."""
    source = getattr(method, "source", None)
    return "" if source is None else f" (its SPEC is in {source.file})"


def method_settings(config: dict, methods=None, base_dir=".") -> list[MethodSetting]:
    """Expand every method entry's grid into MethodSettings (list values are grids).

    `methods` maps names to objects with `defaults` (and `choices`); the default is
    `method_specs(config, base_dir)`, the built-ins and the config's user methods.
    """
    if methods is None:
        methods = method_specs(config, base_dir)
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
                f"methods.{entry}.{unknown[0]}: unknown hyperparameter of {method_name}"
                f"{_defined_in(method)}; known: {sorted(method.defaults)}"
            )
        grid = {}
        choices = getattr(method, "choices", {})
        for name, default in method.defaults.items():
            values = _grid(raw.get(name, default), default)
            key = f"methods.{entry}.{name}"
            try:
                if not values:
                    raise ConfigError(f"{key}: an empty grid")
                grid[name] = [_check_range(key, _check_param(key, v, default, choices.get(name)))
                              for v in values]
            except ConfigError as error:
                raise ConfigError(f"{error}{_defined_in(method)}") from None
        for combination in itertools.product(*grid.values()):
            params = dict(zip(grid, combination))
            config_id = stable_hash({"method": method_name, "params": params})
            settings.append(MethodSetting(entry, method_name, params, config_id, forget_sets))
    return settings


