"""Configuration: schema validation, checks that need the data, defaults and method grids.

Everything that can be wrong in config.yaml is caught here, before any job
runs, with a message that names the key at fault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from klomflow.config.settings import (
    ConfigError,
    method_settings,
    method_specs,
)
from klomflow.data import manipulations
from klomflow.data.published.layout import PublishedError, Source
from klomflow.data.published.reading import check_files
from klomflow.forget_sets.kinds import (
    DERIVED_KINDS,
    ForgetSetError,
    check_derived,
    corrective_references,
    make_forget_set,
    resolved_spec,
)
from klomflow.options import SECTIONS, section_defaults

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")
# The default config (config.yaml at the top of a checkout is a link to it): what a short
# config leaves out comes from here.
DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")

# Defaults for optional keys, from the typed sections (klomflow/options.py); the schema says
# which keys exist at all.
DEFAULTS = {section: section_defaults(cls) for section, cls in SECTIONS.items()}
# Nominal training-set sizes, used to check forget sets before a dataset is downloaded.
NOMINAL_SIZES = {"cifar10": (50000, 10), "cifar100": (50000, 100), "mnist": (60000, 10),
                 "fashion_mnist": (60000, 10)}


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
        detail, path = error.message, _key_path(error)
        if error.validator == "oneOf" and error.context:
            context = error.context
            # A forget set names its kind: report only that kind's branch, at its key.
            kind = error.instance.get("kind") if isinstance(error.instance, dict) else None
            branches = [index for index, branch in enumerate(error.validator_value)
                        if branch.get("properties", {}).get("kind", {}).get("const") == kind]
            kinds = [branch.get("properties", {}).get("kind", {}).get("const")
                     for branch in error.validator_value]
            if isinstance(kind, str) and not branches and all(kinds):
                messages.append(f"{path}.kind: unknown kind {kind!r}; one of {kinds}")
                continue
            if branches:
                context = [sub for sub in context if sub.relative_schema_path[0] in branches]
            detail = "; ".join(sorted({sub.message for sub in context}))
            if branches and len(context) == 1 and context[0].relative_path:
                path = f"{path}.{'.'.join(str(part) for part in context[0].relative_path)}"
        messages.append(f"{path}: {detail}")
    raise ConfigError("invalid config:\n  " + "\n  ".join(messages))


def in_schema_order(value, schema: dict):
    """`value` with every mapping's keys in the order `schema` declares them.

    Snakemake compares a job's params by repr(), in which a dict's key order shows: without
    this, the same config with its keys in another order (re-saved by yaml.safe_dump, which
    sorts them) plans finished jobs again. Declared order, not sorted order: a config written
    in the documented order (config.yaml's) keeps the params it had, so finished runs stay
    finished. Named mappings (forget sets, method entries) keep the config's order, which
    tables and figures follow; rules whose params list them sort the names themselves.
    """
    if not isinstance(value, dict) or not isinstance(schema, dict):
        return value
    # A forget set: the schema of its kind (one oneOf branch per kind).
    for branch in schema.get("oneOf", []):
        if branch.get("properties", {}).get("kind", {}).get("const") == value.get("kind"):
            schema = branch
            break
    properties = schema.get("properties", {})
    if not properties:  # a mapping of names
        entry = schema.get("additionalProperties")
        return {key: in_schema_order(item, entry) for key, item in value.items()}
    ordered = {key: in_schema_order(value[key], properties[key])
               for key in properties if key in value}
    # Undeclared keys fail the schema check; sorted here so the order is canonical anyway.
    return ordered | {key: value[key] for key in sorted(set(value) - set(ordered), key=str)}


def with_defaults(config: dict) -> dict:
    """A copy of `config` with every optional section key filled in."""
    resolved = json.loads(json.dumps(config))
    for section, defaults in DEFAULTS.items():
        resolved[section] = defaults | (resolved.get(section) or {})
    return resolved


def training_labels(config: dict, base_dir=".") -> tuple[np.ndarray | None, int, int]:
    """(training labels or None, n_train, n_classes) for checks before any job runs.

    Read without torch (planning the DAG must not import it). Torchvision
    datasets that are not downloaded yet are checked against their nominal
    sizes; the forget-set rule checks again against the real labels.
    """
    from klomflow.data.datasets import TORCHVISION_DATASETS
    from klomflow.data.datasets import training_labels as read_labels

    dataset = _dataset_under(config, base_dir)
    try:
        labels = read_labels(dataset)
    except FileNotFoundError:
        n_train, n_classes = NOMINAL_SIZES[dataset["name"]]
        return None, n_train, 20 if dataset.get("labels") == "coarse" else n_classes
    n_classes = NOMINAL_SIZES[dataset["name"]][1] if dataset["name"] in TORCHVISION_DATASETS \
        else 10
    if dataset.get("labels") == "coarse":
        n_classes = 20
    return labels, len(labels), n_classes


def _dataset_under(config: dict, base_dir) -> dict:
    """The `dataset` section with its data_dir relative to `base_dir`."""
    dataset = dict(config["dataset"])
    dataset["data_dir"] = str(Path(base_dir) / dataset.get("data_dir", "data"))
    return dataset


def subclasses(config: dict, base_dir=".") -> np.ndarray:
    """The fine labels of CIFAR-100's training points (with `dataset.labels: coarse`)."""
    from klomflow.data.datasets import training_labels as read_labels

    return read_labels(_dataset_under(config, base_dir), fine=True)


def with_default_sections(config: dict) -> dict:
    """`config` with every required section it leaves out taken whole from the default
    config, so that a user's config states only what differs.

    Whole sections only: a section the config gives is used as written (its optional keys
    take the typed defaults, as always), so a config that names every section means what
    it meant before; `methods` and `forget_sets` given in the config replace the default's
    entries rather than adding to them.
    """
    required = yaml.safe_load(SCHEMA_PATH.read_text())["required"]
    missing = [section for section in required if section not in (config or {})]
    if not missing:
        return config
    defaults = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return dict(config or {}) | {section: defaults[section] for section in missing}


def validate(config: dict, base_dir=".", methods=None) -> dict:
    """Check `config` completely and return it with defaults filled in.

    Raises ConfigError naming the key at fault. Required sections the config leaves out
    come from the default config (with_default_sections).
    """
    config = with_default_sections(config)
    check_schema(config)
    # Every later step keeps key order, so the resolved config (and every job's params) is in
    # one order whatever the order of the file.
    resolved = with_defaults(in_schema_order(config, yaml.safe_load(SCHEMA_PATH.read_text())))
    check_schema(resolved)
    if resolved["dataset"]["name"] == "digits" and resolved["model"]["name"] == "resnet9":
        raise ConfigError("model.name: resnet9 needs image inputs; digits are flat 64-vectors")
    source = check_source(resolved, base_dir)
    labels, n_train, n_classes = training_labels(resolved, base_dir)
    labels_read = labels is not None
    if labels is None:  # nominal check only: no label -> use a fake label array of the right size
        labels = np.arange(n_train) % n_classes
    coarse = resolved["dataset"].get("labels", "fine") == "coarse"
    if coarse and resolved["dataset"]["name"] != "cifar100":
        raise ConfigError(f"dataset.labels: coarse labels exist for cifar100 only, not "
                          f"{resolved['dataset']['name']!r}")
    manipulated = check_manipulations(resolved, labels, source)
    for name, spec in resolved["forget_sets"].items():
        if spec["kind"] == "class" and spec["label"] >= n_classes:
            raise ConfigError(
                f"forget_sets.{name}.label={spec['label']}: the dataset has classes "
                f"0..{n_classes - 1}"
            )
        try:
            if spec["kind"] in ("subpopulation", "identified", *DERIVED_KINDS):
                spec = resolved["forget_sets"][name] = resolved_spec(name, spec)
            if spec["kind"] in DERIVED_KINDS:
                check_derived(name, spec, n_train, resolved["datamodels"]["n_subset_models"],
                              base_dir)
            elif spec["kind"] == "subpopulation":
                if not coarse:
                    raise ForgetSetError(
                        f"forget_sets.{name}.kind: subpopulation needs dataset cifar100 with "
                        f"dataset.labels: coarse (superclass labels, fine subclasses)")
                if labels_read:
                    make_forget_set(name, spec, labels, base_dir,
                                    train_subclasses=subclasses(resolved, base_dir))
            else:
                make_forget_set(name, spec, labels, base_dir, source=source,
                                manipulated_sets=manipulated)
        except ForgetSetError as error:
            raise ConfigError(str(error)) from None
    try:
        corrective_references(resolved["forget_sets"])
    except ForgetSetError as error:
        raise ConfigError(str(error)) from None
    if methods is None:  # the built-ins and the config's user methods
        methods = method_specs(resolved, base_dir)
    settings = method_settings(resolved, methods)
    for setting in settings:
        method = methods[setting.implementation]
        if method.class_only:
            for name in setting.forget_sets:
                if resolved["forget_sets"][name]["kind"] != "class":
                    raise ConfigError(
                        f"methods.{setting.entry}: {setting.implementation} forgets whole "
                        f"classes only, but forget set {name!r} is of kind "
                        f"{resolved['forget_sets'][name]['kind']!r}; restrict the entry with "
                        f"`forget_sets: [...]`"
                    )
    return resolved


def check_manipulations(resolved: dict, labels, source) -> dict:
    """Fill in the manipulations' defaults and check them against the labels; returns each
    one's S_m (training indices) by name, for the `identified` forget sets."""
    specs = resolved.get("manipulations") or {}
    if specs and source is not None:
        raise ConfigError("manipulations: published models (models.source) were trained on "
                          "the clean data; a manipulated run trains its own originals")
    for name, spec in specs.items():
        specs[name] = manipulations.DEFAULTS[spec["kind"]] | spec
        if spec["kind"] == "interclass" and specs[name]["select"] == "random":
            specs[name].setdefault("seed", 0)
        if spec["kind"] == "interclass" and "seed" in spec and spec.get("select") != "random":
            raise ConfigError(f"manipulations.{name}.seed: only select: random draws with a seed")
    try:
        return manipulations.manipulated_sets(manipulations.resolved(specs), labels)
    except manipulations.ManipulationError as error:
        raise ConfigError(str(error)) from None


def check_source(resolved: dict, base_dir=".") -> Source | None:
    """Check `models.source` and the files it names (existence and counts; no file is read).

    A published layout holds CIFAR-10 ResNet-9s; its oracles cover published forget
    sets only, so any other forget set needs `train_missing_oracles: true`, which
    trains them here (with a warning: the recipe must then be the published one).
    """
    source_config = resolved["models"].get("source")
    if source_config is None or source_config["layout"] == "train":
        for name, spec in resolved["forget_sets"].items():
            if spec["kind"] == "published":
                raise ConfigError(f"forget_sets.{name}.kind: a published forget set needs "
                                  f"models.source.layout klom_models or easydub (and its path)")
        return None
    resolved["models"]["source"] = {"train_missing_oracles": False} | source_config
    source = Source.from_setting(resolved["models"].get("source"), base_dir)
    if not source.root.is_dir():
        raise ConfigError(f"models.source.path: folder {str(source.root)!r} does not exist")
    if resolved["dataset"]["name"] != "cifar10":
        raise ConfigError(f"dataset.name: the published {source.layout} models are CIFAR-10 "
                          f"models; set dataset.name: cifar10")
    if resolved["model"]["name"] != "resnet9":
        raise ConfigError(f"model.name: the published {source.layout} models are ResNet-9s; set "
                          f"model.name: resnet9")
    models = resolved["models"]
    n_oracles = models["n_oracles"] + models["n_holdout_oracles"]
    try:
        check_files(source.original_files(models["n_originals"]), "original models",
                    models["n_originals"])
        for name, spec in resolved["forget_sets"].items():
            if spec["kind"] == "published":
                check_files(source.oracle_files(spec["id"], n_oracles),
                            f"oracles for forget_set_{spec['id']}", n_oracles)
            elif not resolved["models"]["source"]["train_missing_oracles"]:
                raise ConfigError(
                    f"forget_sets.{name}: the {source.layout} folder has oracles for published "
                    f"forget sets only; use kind: published, or set "
                    f"models.source.train_missing_oracles: true to train its oracles here")
            else:
                print(f"klomflow: WARNING: forget set {name!r}: its oracles are trained here "
                      f"against {source.layout} originals; the train section must be the "
                      f"published recipe (see config/{source.layout}_cifar10.yaml) or KLOM "
                      f"measures the recipe difference", file=sys.stderr)
    except PublishedError as error:
        raise ConfigError(f"models.source: {error}") from None
    return source


def load(path, base_dir=None) -> dict:
    """Read and validate a config file."""
    path = Path(path)
    with open(path) as handle:
        config = yaml.safe_load(handle)
    return validate(config, base_dir if base_dir is not None else path.parent)
