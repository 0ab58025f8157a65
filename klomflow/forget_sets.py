"""Forget sets: which training points an unlearning method must forget.

Four kinds: `random` (size points drawn with a seed), `class` (every
training point of one label), `indices` (a .npy or text file of training
indices) and `published` (set `id` 1..10 of the published KLOM benchmark, read
from `models.source.path`). All give sorted, unique int64 training indices,
deterministically (a published set's file order, which set 10 does not keep
sorted, is read again from the folder where the layout's files depend on it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class ForgetSetError(ValueError):
    pass


class ForgetSetWarning(UserWarning):
    """A forget-set file that is usable but probably not what was meant."""


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


def make_forget_set(name: str, spec: dict, train_labels, base_dir=".", source=None,
                    log=None) -> np.ndarray:
    """Sorted int64 training indices of forget set `name` described by `spec`.

    Raises ForgetSetError naming `forget_sets.<name>` for an empty set, an
    index outside the training set or a label no training point has.
    `source` (klomflow.published.Source) is the folder a `published` set comes from;
    `log` receives its checksum warnings (none at config time, in the job's log).
    """
    train_labels = np.asarray(train_labels)
    n_train = len(train_labels)
    key = f"forget_sets.{name}"
    kind = spec["kind"]
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
        path = Path(spec["path"])
        path = path if path.is_absolute() else Path(base_dir) / path
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
        from klomflow.published import PublishedError, read_forget_set

        if source is None:
            raise ForgetSetError(f"{key}.kind: a published forget set needs models.source with "
                                 f"layout klom_models or easydub")
        try:
            indices = read_forget_set(source, spec["id"], n_train,
                                      log=log or (lambda message: None))
        except PublishedError as error:
            raise ForgetSetError(f"{key}: {error}") from None
    else:
        raise ForgetSetError(f"{key}.kind: unknown kind {kind!r}")
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ForgetSetError(f"{key} is empty")
    if indices.size == n_train:
        raise ForgetSetError(f"{key} holds every training point; nothing would be left to retain")
    return indices


def is_whole_class(indices, train_labels) -> bool:
    """True when `indices` are exactly the training points of one label."""
    labels = np.asarray(train_labels)
    chosen = np.unique(labels[indices])
    return chosen.size == 1 and np.array_equal(np.flatnonzero(labels == chosen[0]), indices)
