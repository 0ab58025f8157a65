"""Forget sets: which training points an unlearning method must forget.

Static kinds, made from the config and the labels alone: `random` (size
points drawn with a seed), `class` (every training point of one label),
`indices` (a .npy or text file of training indices), `published` (set `id`
1..10 of the published KLOM benchmark, read from `models.source.path`),
`subpopulation` (points of one fine class inside its CIFAR-100 superclass,
with `dataset.labels: coarse`) and `identified` (the identified share S_f of a
manipulated set S_m, for corrective unlearning: `identified_subset`).

Derived kinds, made by a job from trained models (klomflow/jobs/forget_sets.py,
algorithms in the other modules of klomflow/forget_sets/): `datamodel_pc`,
`nearest_neighbors` and `worst_case`. Here only their keys are checked and
their defaults filled (`resolved_spec`), and `inputs_needed` says which files
their job reads, so the rules make those first.

All give sorted, unique int64 training indices, deterministically (a
published set's file order, which set 10 does not keep sorted, is read again
from the folder where the layout's files depend on it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class ForgetSetError(ValueError):
    pass


class ForgetSetWarning(UserWarning):
    """A forget-set file that is usable but probably not what was meant."""


def derived_error(key: str, error: Exception) -> ValueError:
    """The algorithms' errors start with the key at fault ("anchor: ..."): prefix
    the set's own key, `forget_sets.<name>.anchor: ...`."""
    message = str(error)
    head = message.split(":", 1)[0]
    return ForgetSetError(f"{key}.{message}" if head.isidentifier() else f"{key}: {message}")


def read_index_file(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise ForgetSetError(f"index file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    else:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=None)
    values = np.asarray(values).ravel()
    if values.size and not np.all(np.equal(np.mod(values, 1), 0)):
        raise ForgetSetError(f"index file {str(path)!r} holds non-integer values")
    return values.astype(np.int64)


DERIVED_KINDS = ("datamodel_pc", "nearest_neighbors", "worst_case")

# Defaults of the optional keys of the derived kinds (docs/forget_sets.md); all are choices
# of this tool (the paper's recipe for its PC sets is not published), recorded in
# each set's sidecar.
KIND_DEFAULTS = {
    "datamodel_pc": {"side": "top", "rows": "target", "center": True, "normalize": "none",
                     "zero_diagonal": False, "solver": "auto", "seed": 0},
    "nearest_neighbors": {"metric": "cosine", "include_anchor": True, "models": 10},
    "subpopulation": {"select": "first"},  # and seed 0 with select: random
    "worst_case": {"proxy": "inout_klom"},
    "identified": {"seed": 0, "draw": "nested"},
}
BILEVEL_DEFAULTS = {"outer_steps": 10, "inner_epochs": 2, "inner_lr": 0.01, "w_lr": 0.01,
                    "gamma": 0.0, "lower_level": "fine_tune", "seed": 0}
# Fewer subset models than this give datamodel-derived sets that are mostly noise
# (measured on digits: PC sets degrade at 100 models); a choice of this tool.
MIN_SUBSET_MODELS = 100


def resolved_spec(name: str, spec: dict) -> dict:
    """`spec` with the optional keys of its kind filled in; keys that its variant
    does not use are errors naming `forget_sets.<name>.<key>`."""
    kind = spec["kind"]
    resolved = KIND_DEFAULTS.get(kind, {}) | spec
    key = f"forget_sets.{name}"
    if kind == "worst_case":
        bilevel_keys = sorted(set(spec) & set(BILEVEL_DEFAULTS) - {"seed"})
        if resolved["proxy"] == "bilevel":
            resolved = BILEVEL_DEFAULTS | resolved
        elif bilevel_keys:
            raise ForgetSetError(f"{key}.{bilevel_keys[0]}: only proxy: bilevel takes "
                                 f"{bilevel_keys[0]} (proxy is {resolved['proxy']!r})")
    if kind == "nearest_neighbors":
        if (resolved["embedding"] == "file") != ("path" in spec):
            raise ForgetSetError(f"{key}.path: embedding: file needs a path, and only it takes one")
        if resolved["embedding"] != "penultimate" and "models" in spec:
            raise ForgetSetError(f"{key}.models: only embedding: penultimate averages models")
        if resolved["embedding"] != "penultimate":
            resolved.pop("models")
    if kind == "datamodel_pc" and resolved["side"] == "both" and resolved["size"] % 2:
        raise ForgetSetError(f"{key}.size={resolved['size']}: side: both takes size/2 points "
                             f"from each end, so the size must be even")
    if kind == "subpopulation" and resolved["select"] == "first" and "seed" in spec:
        raise ForgetSetError(f"{key}.seed: only select: random draws with a seed")
    if kind == "subpopulation" and resolved["select"] == "random":
        resolved.setdefault("seed", 0)
    return resolved


def inputs_needed(spec: dict) -> set:
    """What a forget set's job reads besides the points table: any of
    "margin_datamodel", "subset_models", "originals", "embedding_file", "pilot"."""
    kind = spec["kind"]
    if kind == "datamodel_pc":
        return {"margin_datamodel"}
    if kind == "nearest_neighbors":
        return {"datamodel": {"margin_datamodel"}, "penultimate": {"originals"},
                "file": {"embedding_file"}}[spec["embedding"]]
    if kind == "worst_case":
        return {"inout_klom": {"subset_models"}, "bilevel": {"pilot"},
                "self_influence": {"margin_datamodel", "subset_models"},
                "datamodel_group": {"margin_datamodel", "subset_models"}}[spec["proxy"]]
    return set()


def check_derived(name: str, spec: dict, n_train: int, n_subset_models: int,
                  base_dir=".") -> None:
    """The checks a derived kind allows before its inputs exist: sizes, ranges, files."""
    key = f"forget_sets.{name}"
    size = spec["size"]
    limit = n_train - 1 if spec["kind"] == "nearest_neighbors" and not spec[
        "include_anchor"] else n_train
    if size >= limit:
        raise ForgetSetError(f"{key}.size={size}: must be below the {n_train} training points"
                             + (" less the anchor" if limit < n_train else ""))
    if spec["kind"] == "datamodel_pc" and spec["solver"] == "exact" and n_train > 20000:
        raise ForgetSetError(f"{key}.solver: exact SVD of a {n_train} x {n_train} matrix is "
                             f"refused above 20000 training points; use randomized or auto")
    if spec["kind"] == "nearest_neighbors":
        if spec["anchor"] >= n_train:
            raise ForgetSetError(f"{key}.anchor={spec['anchor']}: outside the training set "
                                 f"(0..{n_train - 1})")
        if spec["embedding"] == "file":
            path = spec_path(spec, base_dir)
            if not path.exists():
                raise ForgetSetError(f"{key}.path: {str(path)!r} does not exist")
            try:
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            except ValueError as error:
                raise ForgetSetError(f"{key}.path: {str(path)!r} is not a .npy array "
                                     f"({error})") from None
            if len(shape) != 2 or shape[0] < n_train:
                raise ForgetSetError(f"{key}.path: {str(path)!r} has shape {shape}; it needs "
                                     f"one row per training point ({n_train}, d), training "
                                     f"points first, in points.parquet order")
    if inputs_needed(spec) & {"margin_datamodel", "subset_models"} and \
            n_subset_models < MIN_SUBSET_MODELS:
        raise ForgetSetError(f"{key}: kind {spec['kind']} is derived from subset models, and "
                             f"datamodels.n_subset_models={n_subset_models} is below "
                             f"{MIN_SUBSET_MODELS}")


def spec_path(spec: dict, base_dir=".") -> Path:
    """A forget set's `path` key (index or embedding file), relative to `base_dir`."""
    path = Path(spec["path"])
    return path if path.is_absolute() else Path(base_dir) / path


def identified_subset(manipulated, fraction: float, seed: int, draw: str) -> np.ndarray:
    """S_f: fraction * |S_m| points rounded half up (at least one) of the manipulated set S_m
    (`manipulated`, sorted indices), drawn uniformly without replacement.

    draw "nested": the first points of one seeded permutation of S_m, so a larger fraction
    holds every smaller one (the same seed); "independent": a draw of its own per size, as
    the reference caches one draw per (n_m, n_f) (datasets.py:125).
    """
    manipulated = np.asarray(manipulated, dtype=np.int64)
    size = max(1, int(np.floor(fraction * len(manipulated) + 0.5)))
    rng = np.random.default_rng(seed if draw == "nested" else [seed, size])
    return np.sort(rng.permutation(manipulated)[:size])


def make_forget_set(name: str, spec: dict, train_labels, base_dir=".", source=None,
                    log=None, train_subclasses=None, manipulated_sets=None) -> np.ndarray:
    """Sorted int64 training indices of static forget set `name` described by `spec`.

    Raises ForgetSetError naming `forget_sets.<name>` for an empty set, an
    index outside the training set or a label no training point has.
    `source` (klomflow.data.published.layout.Source) is the folder a `published` set comes from;
    `log` receives its checksum warnings (none at config time, in the job's log).
    `train_subclasses` are the fine labels of CIFAR-100 with coarse labels
    (`subpopulation` only). `manipulated_sets` maps each manipulation's name to its S_m
    (`identified` only; klomflow.data.manipulations.manipulated_sets).
    """
    train_labels = np.asarray(train_labels)
    n_train = len(train_labels)
    key = f"forget_sets.{name}"
    kind = spec["kind"]
    if kind in DERIVED_KINDS:
        raise ForgetSetError(f"{key}.kind: {kind} sets are derived from trained models by "
                             f"their own job, not made from the labels")
    if kind == "random":
        if spec["size"] > n_train:
            raise ForgetSetError(f"{key}.size={spec['size']} exceeds the {n_train} training points")
        rng = np.random.default_rng(spec.get("seed", 0))
        indices = rng.choice(n_train, size=spec["size"], replace=False)
    elif kind == "class":
        label = spec["label"]
        indices = np.flatnonzero(train_labels == label)
        if indices.size == 0:
            known = sorted(set(train_labels.tolist()))
            raise ForgetSetError(f"{key}.label={label} is not a class of the training set {known}")
    elif kind == "indices":
        path = spec_path(spec, base_dir)
        try:
            indices = read_index_file(path)
        except ForgetSetError as error:
            raise ForgetSetError(f"{key}.path: {error}") from None
        duplicates = indices.size - np.unique(indices).size
        if duplicates:
            # Dropped below (a forget set is a set); say so, a duplicate can be a typo.
            warnings.warn(f"{key}.path: {str(path)!r} lists {duplicates} duplicate "
                          f"{'index' if duplicates == 1 else 'indices'}; each point is "
                          f"forgotten once", ForgetSetWarning, stacklevel=2)
        outside = indices[(indices < 0) | (indices >= n_train)]
        if outside.size:
            raise ForgetSetError(
                f"{key}.path: index {int(outside[0])} is outside the training set "
                f"(0..{n_train - 1}); {outside.size} such indices"
            )
    elif kind == "published":
        from klomflow.data.published.layout import PublishedError
        from klomflow.data.published.reading import read_forget_set

        if source is None:
            raise ForgetSetError(f"{key}.kind: a published forget set needs models.source with "
                                 f"layout klom_models or easydub")
        try:
            indices = read_forget_set(source, spec["id"], n_train,
                                      log=log or (lambda message: None))
        except PublishedError as error:
            raise ForgetSetError(f"{key}: {error}") from None
    elif kind == "subpopulation":
        from klomflow.forget_sets.subpopulation import subpopulation

        if train_subclasses is None:
            raise ForgetSetError(f"{key}.kind: subpopulation needs dataset cifar100 with "
                                 f"dataset.labels: coarse (superclass labels, fine subclasses)")
        spec = resolved_spec(name, spec)
        try:
            indices = subpopulation(train_subclasses, train_labels, spec["subclass"],
                                    spec.get("size"), spec["select"], spec.get("seed", 0))
        except ValueError as error:

            raise derived_error(key, error) from None
    elif kind == "identified":
        spec = KIND_DEFAULTS["identified"] | spec
        if spec["manipulation"] not in (manipulated_sets or {}):
            raise ForgetSetError(f"{key}.manipulation: {spec['manipulation']!r} is not a "
                                 f"manipulation of the config {sorted(manipulated_sets or {})}")
        indices = identified_subset(manipulated_sets[spec["manipulation"]], spec["fraction"],
                                    spec["seed"], spec["draw"])
    else:
        raise ForgetSetError(f"{key}.kind: unknown kind {kind!r}")
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ForgetSetError(f"{key} is empty")
    if indices.size == n_train:
        raise ForgetSetError(f"{key} holds every training point; nothing would be left to retain")
    return indices


def corrective_references(forget_sets: dict) -> dict:
    """For every `identified` forget set, the name of its corrective gold standard: the
    `identified` set of fraction 1.0 (all of S_m) of the same manipulation, whose oracles
    are retrained without every manipulated point. ForgetSetError when one is missing."""
    gold = {spec["manipulation"]: name for name, spec in forget_sets.items()
            if spec["kind"] == "identified" and spec["fraction"] == 1.0}
    references = {}
    for name, spec in forget_sets.items():
        if spec["kind"] != "identified":
            continue
        if spec["manipulation"] not in gold:
            raise ForgetSetError(
                f"forget_sets.{name}: the corrective gold standard needs an identified forget "
                f"set of fraction 1.0 for manipulation {spec['manipulation']!r}; add one")
        references[name] = gold[spec["manipulation"]]
    return references


def is_whole_class(indices, train_labels) -> bool:
    """True when `indices` are exactly the training points of one label."""
    labels = np.asarray(train_labels)
    chosen = np.unique(labels[indices])
    return chosen.size == 1 and np.array_equal(np.flatnonzero(labels == chosen[0]), indices)
