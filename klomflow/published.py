"""The published KLOM benchmark as a model source: KLOM-models and EasyDUB-dataset folders.

Both publish, for CIFAR-10 and ResNet-9, 200 original models (checkpoints,
logits, margins), 200 oracles per forget set (margins, logits) and the ten
forget sets' index files. `models.source: {layout: klom_models | easydub,
path: DIR}` makes the workflow read originals and oracles from such a folder
instead of training them (rules/train.smk); `../shared/PUBLISHED.md` is the
description of both layouts this module follows.

Decisions where the sources leave a point open (each also in the README):
- KLOM-models' oracle root is `oracles/` on the dataset card and
  `oracle_models/` in the code that downloads it: both are accepted, chosen per
  forget set (the one that holds its files; `oracle_models/`, the newer, when
  both do, with a warning giving both files' SHA-256).
- Oracle and original margins come from the `*_margins_all.pt` files where
  present, else from per-model logits (`train_logits_{k}.pt`,
  `val_logits_{k}.pt`) and the dataset's labels.
- EasyDUB's `forget` files are taken to follow the forget file's order; where
  the forget file is unsorted and the originals' `forget` file of model 0
  exists, it settles the order once per forget set (it must equal model 0's
  `retain` margins at one of the two orders, with a clear gap to the other).
- Stored margins must follow from stored logits or weights within
  0.05 + 0.01·|margin| (EasyDUB computed each split in its own bfloat16 pass:
  about 1e-2 on correct files; other points or labels differ by whole units).
- Forget-set checksums are SHA-256 of the `.npy` file's bytes (the prefix the
  table below gives reproduces for sets 1-3 regenerated from their seeds);
  a mismatch is a warning, as the published files may be re-saved with
  another dtype; size, uniqueness and range are errors.
- Model ids are 0-based and read in numeric order (never lexicographic).
- Imported models have no seed: their checkpoints record the file, its
  SHA-256 and the model id; tables write seed -1 for them.

This module's path helpers import nothing heavy: rules/common.smk uses them to
list a job's input files while it plans the DAG.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYOUTS = ("klom_models", "easydub")
# KLOM-models' oracle folders, preferred first: `oracle_models/` in the code that downloads
# them (data-unlearning-bench moved there days after its fix "oracles were not ignoring
# forget set"), `oracles/` on the dataset card. A snapshot may hold both.
ORACLE_ROOTS = ("oracle_models", "oracles")
# The published checkpoints are after epoch index 23 (0-based) of 24 epochs.
EPOCH = 23
# Published forget sets (PUBLISHED.md 1.3): id -> (size, sum of indices, sha256[:16] of the file).
PUBLISHED_FORGET_SETS = {
    1: (10, 278580, "343e9a739404209b"),
    2: (100, 2285851, "243c897f9120f354"),
    3: (1000, 24768036, "ef08a53dea26090e"),
    4: (10, 265737, "27d014a6eff179de"),
    5: (100, 2572263, "3aa610ab3dee7fba"),
    6: (500, 12071484, "08029e0253a1ffc6"),
    7: (10, 277784, "0fae3e72d6c9ee88"),
    8: (100, 2550554, "521bf3e822a0880f"),
    9: (500, 12894465, "05a2e1ad57b8dadf"),
    10: (100, 2307457, "197fd5153bf80edc"),
}
# The published input normalisation of CIFAR-10 (its models were trained and
# evaluated with it; klomflow's own CIFAR-10 training uses it too).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# Stored margins must follow from stored logits or weights within MARGIN_ATOL + MARGIN_RTOL *
# |margin|. EasyDUB computed each split in its own pass under bfloat16 autocast, so correct
# files differ by about 1e-2; the checkpoint check allows for TF32 convolutions on the GPU
# that wrote the files. Margins of other points or labels differ by whole units.
MARGIN_ATOL = 0.05
MARGIN_RTOL = 0.01


def margins_agree(stored, computed) -> np.ndarray:
    """Per point: `computed` reproduces the `stored` margin within the tolerance above."""
    stored = np.asarray(stored, dtype=np.float64)
    return np.abs(np.asarray(computed, dtype=np.float64) - stored) <= (
        MARGIN_ATOL + MARGIN_RTOL * np.abs(stored))


class PublishedError(ValueError):
    """A published folder lacks a file, holds too few models, or fails a check."""


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """A published folder of one layout; the paths of every file the workflow reads."""

    layout: str
    root: Path

    @classmethod
    def from_config(cls, config: dict, base_dir=".") -> Source | None:
        """The config's published source, or None when models are trained here."""
        source = config["models"].get("source") or {"layout": "train"}
        if source["layout"] == "train":
            return None
        root = Path(source["path"])
        return cls(source["layout"], root if root.is_absolute() else Path(base_dir) / root)

    # --- forget sets ---------------------------------------------------------------------------

    def forget_set_file(self, forget_id: int) -> Path:
        if self.layout == "klom_models":
            return self.root / "forget_set_indices" / "CIFAR10" / f"forget_set_{forget_id}.npy"
        return self.root / "forget_sets" / "cifar10" / f"forget_set_{forget_id}.npy"

    # --- originals -----------------------------------------------------------------------------

    def original_checkpoint(self, model_id: int) -> Path:
        if self.layout == "klom_models":
            return self.root / "full_models" / "CIFAR10" / f"sd_{model_id}____epoch_{EPOCH}.pt"
        return (self.root / "models" / "cifar10" / "pretrain" / "resnet9"
                / f"id_{model_id}_epoch_{EPOCH}.pt")

    def _easydub_file(self, kind: str, role: str, part: str, model_id: int) -> Path:
        # {logits,margins}/cifar10/{pretrain | oracle/forget_z}/{part}/resnet9/id_{m}_epoch_23.npy
        # (pretrain: {retain, val, forget_z}; oracle: forget_z/{retain, forget, val}).
        return (self.root / kind / "cifar10" / role / part / "resnet9"
                / f"id_{model_id}_epoch_{EPOCH}.npy")

    def original_files(self, n_models: int, kind: str = "margins") -> dict[str, list[Path]]:
        """{"train": files, "val": files} of the originals' margins (or logits).

        KLOM-models margins: the two `*_margins_all.pt` files when present, else
        the per-model logits. EasyDUB: one file per model and split.
        """
        if self.layout == "klom_models":
            folder = self.root / "full_models" / "CIFAR10"
            if kind == "margins" and (folder / "train_margins_all.pt").exists():
                return {split: [folder / f"{split}_margins_all.pt"] for split in ("train", "val")}
            return {split: [folder / f"{split}_logits_{k}.pt" for k in range(n_models)]
                    for split in ("train", "val")}
        return {
            "train": [self._easydub_file(kind, "pretrain", "retain", k) for k in range(n_models)],
            "val": [self._easydub_file(kind, "pretrain", "val", k) for k in range(n_models)],
        }

    def original_forget_file(self, forget_id: int, model_id: int = 0) -> Path | None:
        """EasyDUB's originals' margins on the forget points (in the layout's forget order)."""
        if self.layout != "easydub":
            return None
        return self._easydub_file("margins", "pretrain", f"forget_{forget_id}", model_id)

    # --- oracles -------------------------------------------------------------------------------

    def _oracle_files_in(self, root: Path, forget_id: int) -> list[Path]:
        """The files whose presence shows that `root` holds a forget set's oracles."""
        name = f"forget_set_{forget_id}"
        return [root / "CIFAR10" / "only_margins" / name / "train_margins_all.pt",
                root / "CIFAR10" / name / "train_logits_0.pt"]

    def oracle_roots_holding(self, forget_id: int) -> list[Path]:
        """KLOM-models' oracle folders that hold forget set `forget_id`, preferred first."""
        roots = [self.root / name for name in ORACLE_ROOTS]
        return [root for root in roots
                if any(path.exists() for path in self._oracle_files_in(root, forget_id))]

    def oracle_root(self, forget_id: int) -> Path:
        """KLOM-models' oracle folder of one forget set: `oracle_models/` (the code that
        downloads them) where it holds the set's files, else `oracles/` (the dataset card)."""
        holding = self.oracle_roots_holding(forget_id)
        return holding[0] if holding else self.root / ORACLE_ROOTS[0]

    def oracle_root_warning(self, forget_id: int) -> str | None:
        """A warning naming both folders' files and their SHA-256 when both hold the set."""
        holding = self.oracle_roots_holding(forget_id)
        if len(holding) < 2:
            return None
        files = [next(path for path in self._oracle_files_in(root, forget_id) if path.exists())
                 for root in holding]
        digests = [file_sha256(path) for path in files]
        same = "the same bytes" if len(set(digests)) == 1 else "different files"
        return (f"WARNING: both {holding[0].name}/ and {holding[1].name}/ hold the oracles of "
                f"forget_set_{forget_id}; reading {holding[0].name}/ ({files[0]}, SHA-256 "
                f"{digests[0]}), not {holding[1].name}/ ({files[1]}, SHA-256 {digests[1]}): "
                f"{same}. data-unlearning-bench moved its oracles to oracle_models/ after its "
                f"fix \"oracles were not ignoring forget set\"; remove the folder you do not "
                f"mean to score against")

    def oracle_files(self, forget_id: int, n_models: int,
                     kind: str = "margins") -> dict[str, list[Path]]:
        """The oracles' margin (or logit) files of one forget set, by split.

        KLOM-models: {"train", "val"} (train covers all training points, the
        forget points included). EasyDUB: {"retain", "forget", "val"}.
        """
        if self.layout == "klom_models":
            root = self.oracle_root(forget_id) / "CIFAR10"
            all_files = root / "only_margins" / f"forget_set_{forget_id}"
            if kind == "margins" and (all_files / "train_margins_all.pt").exists():
                return {split: [all_files / f"{split}_margins_all.pt"]
                        for split in ("train", "val")}
            folder = root / f"forget_set_{forget_id}"
            return {split: [folder / f"{split}_logits_{k}.pt" for k in range(n_models)]
                    for split in ("train", "val")}
        role = f"oracle/forget_{forget_id}"
        return {part: [self._easydub_file(kind, role, part, k) for k in range(n_models)]
                for part in ("retain", "forget", "val")}

    def uses_logits(self, files: dict[str, list[Path]]) -> bool:
        return any(path.suffix == ".pt" and "_logits_" in path.name
                   for paths in files.values() for path in paths)

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root)}


# --- checks at config time (cheap: file existence only) ------------------------------------------


def count_models(paths: list[Path]) -> int:
    """How many of the per-model `paths` (model ids 0, 1, ...) exist before the first gap."""
    for count, path in enumerate(paths):
        if not path.exists():
            return count
    return len(paths)


def check_files(files: dict[str, list[Path]], what: str, n_models: int) -> None:
    """Fail naming the first missing file, or the count the folder holds against the config's."""
    for paths in files.values():
        if len(paths) == 1 and paths[0].name.endswith("_all.pt"):
            if not paths[0].exists():
                raise PublishedError(f"{what}: missing file {paths[0]}")
            continue
        held = count_models(paths)
        if held < n_models:
            if held == 0:
                raise PublishedError(f"{what}: missing file {paths[0]}")
            raise PublishedError(
                f"the folder holds {held} {what}, the config asks for {n_models} (no "
                f"{paths[held].name} in {paths[held].parent})")


# --- reading -------------------------------------------------------------------------------------


def read_forget_set(source: Source, forget_id: int, n_train: int, log=print) -> np.ndarray:
    """A published forget set's indices in the file's order (int64), checked.

    Errors: missing file, duplicates, indices outside the training set. A
    checksum, size or sum other than the published file's is a warning.
    """
    path = source.forget_set_file(forget_id)
    if not path.exists():
        raise PublishedError(f"published forget set {forget_id}: missing file {path}")
    values = np.load(path, allow_pickle=False)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer)
                                or np.issubdtype(values.dtype, np.floating)):
        raise PublishedError(f"{path}: expected a 1-D integer array, got {values.dtype} "
                             f"{values.shape}")
    if np.issubdtype(values.dtype, np.floating):
        # The authors' loader casts with astype(np.int64); whole numbers stored as floats
        # are read as such, anything else (a fraction, NaN) is not an index.
        fractional = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if fractional.size:
            raise PublishedError(f"{path}: {fractional.size} of {values.size} values are not whole "
                                 f"numbers (first: {values[fractional[0]]!r} at position "
                                 f"{int(fractional[0])}); expected training indices")
        log(f"WARNING: {path} holds indices as {values.dtype}; cast to int64 (whole numbers, "
            f"as the authors' loader casts them)")
    indices = values.astype(np.int64)
    if np.unique(indices).size != indices.size:
        raise PublishedError(f"{path}: {indices.size - np.unique(indices).size} duplicate indices")
    outside = indices[(indices < 0) | (indices >= n_train)]
    if outside.size:
        raise PublishedError(f"{path}: index {int(outside[0])} is outside the training set "
                             f"(0..{n_train - 1}); {outside.size} such indices")
    expected = PUBLISHED_FORGET_SETS.get(forget_id)
    if expected is not None:
        size, total, digest = expected
        found = (indices.size, int(indices.sum()), file_sha256(path)[:16])
        if found != (size, total, digest):
            log(f"WARNING: {path} differs from the published forget set {forget_id} "
                f"(size, sum, sha256[:16]: expected {expected}, found {found}); "
                f"scores on it are not comparable with published ones")
    return indices


def load_tensor_file(path) -> np.ndarray:
    """A `.pt` tensor file or a `.npy` array as a numpy array (dtype kept)."""
    path = Path(path)
    if not path.exists():
        raise PublishedError(f"missing file {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import torch

    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise PublishedError(f"{path}: expected a tensor, got {type(value).__name__}")
    return value.detach().contiguous().numpy()


def as_float32(array: np.ndarray, path, log=print) -> np.ndarray:
    """Margins or logits as float32: float16 is upcast with a warning; NaN is an error."""
    if array.dtype == np.float16:
        log(f"WARNING: {path} holds float16 values; upcast to float32 (margins carry float16's "
            f"rounding, about 0.01 at 10)")
    elif not np.issubdtype(array.dtype, np.floating):
        raise PublishedError(f"{path}: expected floating-point values, got {array.dtype}")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        raise PublishedError(f"{path}: {int(bad.sum())} NaN or infinite values")
    return array


def _stack_rows(paths: list[Path], n_models: int, n_points: int, what: str, log) -> np.ndarray:
    """[n_models, n_points] from one `*_all.pt` file (rows = model ids) or one file per model."""
    if len(paths) == 1 and paths[0].name.endswith("_all.pt"):
        array = as_float32(load_tensor_file(paths[0]), paths[0], log)
        if array.ndim != 2 or array.shape[1] != n_points:
            raise PublishedError(f"{paths[0]}: expected shape [n_models, {n_points}], got "
                                 f"{list(array.shape)}")
        if array.shape[0] < n_models:
            raise PublishedError(f"the folder holds {array.shape[0]} {what} ({paths[0]}), the "
                                 f"config asks for {n_models}")
        return array[:n_models]
    check_files({"rows": paths}, what, n_models)
    rows = []
    for path in paths[:n_models]:
        row = as_float32(load_tensor_file(path), path, log)
        if row.shape != (n_points,):
            raise PublishedError(f"{path}: expected shape [{n_points}], got {list(row.shape)}")
        rows.append(row)
    return np.stack(rows)


def _margins_from_logit_files(paths: list[Path], labels, n_models: int, what: str,
                              log) -> np.ndarray:
    from klomflow.margins import margins_from_logits

    check_files({"rows": paths}, what, n_models)
    rows = []
    for path in paths[:n_models]:
        logits = as_float32(load_tensor_file(path), path, log)
        if logits.ndim != 2 or logits.shape[0] != len(labels):
            raise PublishedError(f"{path}: expected shape [{len(labels)}, n_classes], got "
                                 f"{list(logits.shape)}")
        rows.append(margins_from_logits(logits, labels))
    return np.stack(rows)


def read_split_margins(files: dict[str, list[Path]], labels_by_split: dict, n_models: int,
                       what: str, log=print) -> dict[str, np.ndarray]:
    """{split: margins [n_models, n_points of the split]} from margin or logit files."""
    out = {}
    for split, paths in files.items():
        n_points = len(labels_by_split[split])
        if paths and "_logits_" in paths[0].name:
            out[split] = _margins_from_logit_files(paths, labels_by_split[split], n_models, what,
                                                   log)
        else:
            out[split] = _stack_rows(paths, n_models, n_points, what, log)
    return out


def original_margins(source: Source, labels, n_train: int, n_models: int,
                     log=print) -> np.ndarray:
    """Originals' margins [n_models, n_train + n_val], rows in model-id order."""
    labels = np.asarray(labels)
    files = source.original_files(n_models)
    split = read_split_margins(files, {"train": labels[:n_train], "val": labels[n_train:]},
                               n_models, "original models", log)
    return np.concatenate([split["train"], split["val"]], axis=1)


def forget_order(source: Source, forget_id: int, forget_file_order: np.ndarray,
                 log=print) -> np.ndarray:
    """The order of the points in EasyDUB's `forget` files of one forget set.

    Decided once per forget set, the same way for every reader (the oracles'
    margins and the held-out oracles' logits). A forget file in ascending order
    leaves nothing to decide. Otherwise the originals' `forget` file of model 0
    is compared with model 0's `retain` margins at the forget file's order and
    at the sorted order (PUBLISHED.md 3, check 4): the closer order is taken if
    it reproduces every point and the other order fails at most of the places
    where the two orders differ (a clear gap).
    """
    sorted_order = np.sort(forget_file_order)
    if np.array_equal(sorted_order, forget_file_order):
        return forget_file_order
    path = source.original_forget_file(forget_id)
    if path is None or not path.exists():
        return forget_file_order
    retain_path = source.original_files(1)["train"][0]
    stored = as_float32(load_tensor_file(path), path, log)
    retain = as_float32(load_tensor_file(retain_path), retain_path, log)
    if stored.shape != forget_file_order.shape:
        raise PublishedError(f"{path}: expected shape [{len(forget_file_order)}] (forget set "
                             f"{forget_id}), got {list(stored.shape)}")
    differ = forget_file_order != sorted_order
    fits = {"the forget file's order": margins_agree(stored, retain[forget_file_order]),
            "the sorted order": margins_agree(stored, retain[sorted_order])}
    (best, best_fit), (other, other_fit) = sorted(fits.items(), key=lambda item: -item[1].sum())
    summary = (f"{int(best_fit.sum())} of {len(stored)} points fit {best}, "
               f"{int(other_fit.sum())} fit {other}")
    if not best_fit.all() or other_fit[differ].mean() >= 0.5:
        raise PublishedError(
            f"{path}: the originals' forget margins do not tell the order of forget set "
            f"{forget_id} from their retain margins ({retain_path}): {summary}; one order "
            f"must fit every point and the other fail at most of the places where they differ")
    log(f"{path}: forget set {forget_id}'s forget files follow {best} ({summary})")
    return forget_file_order if best == "the forget file's order" else sorted_order


def oracle_margins(source: Source, forget_id: int, forget_indices_file_order, labels,
                   n_train: int, n_models: int, log=print) -> np.ndarray:
    """Oracles' margins of one forget set [n_models, n_train + n_val], rows in model-id order.

    EasyDUB's oracles store retain points (ascending index order), forget points
    (the forget file's order) and validation points separately; they are put
    back in training-index order here.
    """
    labels = np.asarray(labels)
    what = f"oracles for forget_set_{forget_id}"
    files = source.oracle_files(forget_id, n_models)
    forget = np.asarray(forget_indices_file_order, dtype=np.int64)
    if source.layout == "klom_models":
        split = read_split_margins(files, {"train": labels[:n_train], "val": labels[n_train:]},
                                   n_models, what, log)
        return np.concatenate([split["train"], split["val"]], axis=1)
    order = forget_order(source, forget_id, forget, log)
    keep = np.ones(n_train, dtype=bool)
    keep[forget] = False
    retain = np.flatnonzero(keep)
    split = read_split_margins(files, {"retain": labels[retain], "forget": labels[order],
                                       "val": labels[n_train:]}, n_models, what, log)
    check_oracle_point_order(source, forget_id, split, {"retain": labels[retain],
                             "forget": labels[order], "val": labels[n_train:]}, log)
    train = np.empty((n_models, n_train), dtype=np.float32)
    train[:, retain] = split["retain"]
    train[:, order] = split["forget"]
    return np.concatenate([train, split["val"]], axis=1)


def check_oracle_point_order(source: Source, forget_id: int, margins: dict, labels: dict,
                             log=print) -> None:
    """EasyDUB: oracle 0's logits and margins give the dataset's labels in every part.

    Nothing else shows the order of an oracle's `retain` file (ascending training
    index, EasyDUB's mask): a file in another order would silently mix points up
    in retain KLOM, but its logits and margins then give other points' labels.
    """
    logit_files = {part: paths[0] for part, paths in
                   source.oracle_files(forget_id, 1, "logits").items()}
    if not all(path.exists() for path in logit_files.values()):
        log(f"WARNING: no logits of oracle 0 for forget_set_{forget_id} "
            f"({logit_files['retain'].parent}): the order of its retain points (ascending "
            f"index) is not checked")
        return
    for part, path in logit_files.items():
        logits = as_float32(load_tensor_file(path), path, log)
        if logits.ndim != 2 or logits.shape[0] != len(labels[part]):
            raise PublishedError(f"{path}: expected shape [{len(labels[part])}, n_classes], got "
                                 f"{list(logits.shape)}")
        order = ("ascending training index" if part == "retain" else
                 "the forget set's" if part == "forget" else "the validation set's")
        check_margins_at_labels(logits, margins[part][0], labels[part],
                                f"oracle 0 of forget_set_{forget_id} ({path}; points in "
                                f"{order} order)")
    log(f"oracle 0 of forget_set_{forget_id}: its logits and margins give the dataset's labels "
        f"on its retain (ascending index), forget and validation points")


def read_logits(files: dict[str, list[Path]], model_ids, n_points_by_split: dict,
                what: str, log=print, order=None) -> np.ndarray:
    """Per-model logits [n_models, n_train + n_val, n_classes] in training-index order.

    `order` (EasyDUB oracles): (retain indices, forget indices in file order,
    n_train) to put the retain ‖ forget files back in training-index order.
    """
    models = []
    for model_id in model_ids:
        parts = {}
        for split, paths in files.items():
            path = paths[model_id]
            logits = as_float32(load_tensor_file(path), path, log)
            if logits.ndim != 2 or logits.shape[0] != n_points_by_split[split]:
                raise PublishedError(f"{path}: expected shape [{n_points_by_split[split]}, "
                                     f"n_classes], got {list(logits.shape)}")
            parts[split] = logits
        if order is not None:
            retain, forget, n_train = order
            train = np.empty((n_train, parts["retain"].shape[1]), dtype=np.float32)
            train[retain], train[forget] = parts["retain"], parts["forget"]
            models.append(np.concatenate([train, parts["val"]]))
        else:
            models.append(np.concatenate([parts["train"], parts["val"]]))
    return np.stack(models)


# --- label recovery and the consistency checks --------------------------------------------------


def recover_labels(logits, margins, path="", log=None) -> np.ndarray:
    """The label of each point: the class c whose margin z_c - LSE_{j!=c} z_j is the stored one.

    logits [n_points, n_classes], margins [n_points]. Fails naming `path` when
    no class reproduces a stored margin within the tolerance (margins and
    logits of different models, points or normalisations). Where two classes
    reproduce it (logits nearly tied), the closer one is taken, and `log`
    says at how many points.
    """
    from klomflow.margins import margins_from_logits

    logits = np.asarray(logits, dtype=np.float32)
    n_points, n_classes = logits.shape
    per_class = np.stack([margins_from_logits(logits, np.full(n_points, c))
                          for c in range(n_classes)], axis=1)  # [n_points, n_classes]
    margins = np.asarray(margins, dtype=np.float32)
    distance = np.abs(per_class - margins[:, None])
    labels = distance.argmin(axis=1)
    fitting = margins_agree(margins[:, None], per_class)
    bad = np.flatnonzero(~fitting.any(axis=1))
    if bad.size:
        raise PublishedError(
            f"{path}: the stored margins do not follow from the logits at {bad.size} points "
            f"(first: point {int(bad[0])}, distance {float(distance[bad[0]].min()):.3g})")
    tied = int((fitting.sum(axis=1) > 1).sum())
    if tied and log is not None:
        log(f"WARNING: {path}: at {tied} points two classes reproduce the stored margin within "
            f"{MARGIN_ATOL} + {MARGIN_RTOL}·|margin|; the closer one is taken as the label")
    return labels.astype(np.int64)


def check_margins_at_labels(logits, margins, labels, what: str) -> None:
    """The stored margins follow from the stored logits at `labels` (within the tolerance).

    A file in another point order (or of other points) fails at most points:
    the labels there are other points' labels.
    """
    from klomflow.margins import margins_from_logits

    computed = margins_from_logits(np.asarray(logits, dtype=np.float32), np.asarray(labels))
    bad = np.flatnonzero(~margins_agree(margins, computed))
    if bad.size:
        first = int(bad[0])
        raise PublishedError(
            f"{what}: the stored margins do not follow from the logits at the dataset's labels "
            f"at {bad.size} of {len(computed)} points (first: point {first}, stored "
            f"{float(margins[first]):.4g}, from the logits {float(computed[first]):.4g}): the "
            f"labels disagree with the dataset's, or the file's point order is not the one "
            f"expected")


def check_oracles_forgot(oracle, original, forget_indices, forget_id) -> dict:
    """Oracles never saw F: their mean margin on forget points is below the originals'."""
    forget = np.asarray(forget_indices)
    oracle_mean = float(oracle[:, forget].mean())
    original_mean = float(original[:, forget].mean())
    if not oracle_mean < original_mean:
        raise PublishedError(
            f"oracles for forget_set_{forget_id}: mean margin on the forget points "
            f"{oracle_mean:.3f} is not below the originals' {original_mean:.3f}; oracles that "
            f"never saw the forget set score lower there (wrong files, or oracles trained on F)")
    return {"oracle_forget_margin": oracle_mean, "original_forget_margin": original_mean}


# --- checkpoints ---------------------------------------------------------------------------------

# The published Residual names its child `module`; klomflow's names it `block`.
_RESIDUAL_CHILD = re.compile(r"^(\d+)\.module\.")


def published_to_klomflow_keys(state_dict: dict, path="") -> dict:
    """A published ResNet-9 state dict with klomflow's key names.

    Strips a leading `model.` (the WrappedModel prefix), then a leading
    `module.` (DataParallel, never produced but harmless), with removeprefix,
    never a global replace (that would corrupt the residual blocks' keys), and
    renames the residual child `{2,5}.module.` to `block.`.
    """
    import torch

    renamed = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise PublishedError(f"{path}: entry {key!r} is not a tensor; expected a state dict")
        stripped = key.removeprefix("model.").removeprefix("module.")
        stripped = _RESIDUAL_CHILD.sub(r"\1.block.", stripped)
        # channels_last strides are kept by torch.load; load_state_dict copies values.
        renamed[stripped] = value.contiguous()
    return renamed


def load_published_model(path, n_classes: int = 10, input_shape=(3, 32, 32)):
    """A klomflow ResNet-9 with a published checkpoint's weights, loaded strictly."""
    import torch

    from klomflow.models import build_model

    path = Path(path)
    if not path.exists():
        raise PublishedError(f"missing file {path}")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise PublishedError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    model = build_model({"name": "resnet9"}, input_shape, n_classes, init_seed=0)
    try:
        model.load_state_dict(published_to_klomflow_keys(state_dict, path), strict=True)
    except RuntimeError as error:
        raise PublishedError(f"{path}: not a ResNet-9 state dict of the published layout "
                             f"({error})") from None
    return model


# --- what the import jobs do (workflow_scripts/ call these) ---------------------------------------


def source_of(config: dict) -> Source:
    source = Source.from_config(config)
    if source is None:
        raise PublishedError("models.source.layout is train: nothing to import")
    return source


def model_zero_files(source: Source) -> dict[str, Path]:
    """Model 0's logits and margins per split: what labels are recovered from."""
    margins = source.original_files(1, "margins")
    logits = source.original_files(1, "logits")
    return {f"{split}_{kind}": files[split][0]
            for kind, files in (("margins", margins), ("logits", logits)) for split in files}


def labels_from_model_zero(source: Source, log=print) -> tuple[np.ndarray, int]:
    """(labels of all points, n_train) recovered from model 0's logits and margins.

    For a published folder used without the dataset's files: the point order is
    the folder's, training points then validation points. A missing or
    misshapen file is an error saying what was found and that the CIFAR-10
    images are then required.
    """
    files = model_zero_files(source)
    needs_images = ("without the CIFAR-10 images the labels come from model 0's logits and "
                    "margins: put cifar-10-batches-py in dataset.data_dir (snakemake "
                    "download_data) or restore the file")
    labels = []
    for split in ("train", "val"):
        logits_path, margins_path = files[f"{split}_logits"], files[f"{split}_margins"]
        for path in (logits_path, margins_path):
            if not path.exists():
                raise PublishedError(f"{path} is missing; {needs_images}")
        margins = as_float32(load_tensor_file(margins_path), margins_path, log)
        margins = margins[0] if margins.ndim == 2 else margins  # `*_all.pt`: row 0
        logits = load_tensor_file(logits_path)
        if logits.ndim != 2 or logits.shape[0] != len(margins) or logits.shape[1] < 2:
            raise PublishedError(
                f"{logits_path}: found {logits.dtype} of shape {list(logits.shape)}, expected "
                f"[{len(margins)}, n_classes] (the points of {margins_path.name}); "
                f"{needs_images}")
        labels.append(recover_labels(as_float32(logits, logits_path, log), margins,
                                     logits_path, log))
    return np.concatenate(labels), len(labels[0])


def check_original_labels(source: Source, margins: np.ndarray, labels, n_train: int,
                          n_models: int, log=print) -> int:
    """Every original's stored margins follow from its logits at the dataset's `labels`.

    Returns the number of models checked (0 when the folder has no logits).
    """
    logit_files = source.original_files(n_models, "logits")
    checked = 0
    for model_id in range(n_models):
        paths = [logit_files["train"][model_id], logit_files["val"][model_id]]
        if not all(path.exists() for path in paths):
            continue
        logits = np.concatenate([as_float32(load_tensor_file(path), path, log) for path in paths])
        if logits.shape[0] != margins.shape[1]:
            raise PublishedError(f"{paths[0]}: {logits.shape[0]} points with the validation "
                                 f"file, the margins have {margins.shape[1]}")
        check_margins_at_labels(logits, margins[model_id], labels,
                                f"original model {model_id} ({paths[0]})")
        checked += 1
    if not checked:
        log("WARNING: the folder holds no originals' logits; labels are not checked against "
            "the margins")
        return 0
    log(f"the stored margins of {checked} originals follow from their logits at the labels of "
        f"points.parquet")
    return checked


def check_point_order(margins: np.ndarray, n_points: int, path: str) -> None:
    if margins.shape[1] != n_points:
        raise PublishedError(f"{path}: margins over {margins.shape[1]} points, the dataset has "
                             f"{n_points} (training points, then validation points)")


def warn_if_two_oracle_roots(source: Source, forget_id: int, log=print) -> None:
    if source.layout == "klom_models" and (warning := source.oracle_root_warning(forget_id)):
        log(warning)


def import_original_margins(config: dict, labels, n_train: int, log=print) -> np.ndarray:
    """The originals' margins [n_originals, n_points], checked (shapes, NaN, labels)."""
    source = source_of(config)
    n_models = config["models"]["n_originals"]
    margins = original_margins(source, labels, n_train, n_models, log)
    check_point_order(margins, len(labels), str(source.root))
    check_original_labels(source, margins, labels, n_train, n_models, log)
    log(f"margins of {n_models} original models from {source.layout} folder {source.root}")
    return margins


def import_oracle_margins(config: dict, forget_set: str, labels, n_train: int,
                          original: np.ndarray, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(scored, held-out) oracle margins of a published forget set: model ids 0..n_oracles-1
    are scored, the next n_holdout_oracles are held out."""
    source = source_of(config)
    forget_id = config["forget_sets"][forget_set]["id"]
    models = config["models"]
    n_models = models["n_oracles"] + models["n_holdout_oracles"]
    forget = read_forget_set(source, forget_id, n_train, log)
    warn_if_two_oracle_roots(source, forget_id, log)
    margins = oracle_margins(source, forget_id, forget, labels, n_train, n_models, log=log)
    check_point_order(margins, len(labels), str(source.root))
    means = check_oracles_forgot(margins, original, forget, forget_id)
    log(f"{n_models} oracles of forget_set_{forget_id}; mean margin on its points: oracles "
        f"{means['oracle_forget_margin']:.3f}, originals {means['original_forget_margin']:.3f}")
    return margins[:models["n_oracles"]], margins[models["n_oracles"]:]


def import_holdout_oracle_logits(config: dict, forget_set: str, n_train: int, n_val: int,
                                 log=print) -> np.ndarray:
    """Held-out oracles' logits [n_holdout, n_points, n_classes] (for oracle_matching)."""
    source = source_of(config)
    forget_id = config["forget_sets"][forget_set]["id"]
    models = config["models"]
    n_models = models["n_oracles"] + models["n_holdout_oracles"]
    warn_if_two_oracle_roots(source, forget_id, log)
    files = source.oracle_files(forget_id, n_models, "logits")
    check_files(files, f"oracle logits for forget_set_{forget_id}", n_models)
    holdout = range(models["n_oracles"], n_models)
    if source.layout == "klom_models":
        return read_logits(files, holdout, {"train": n_train, "val": n_val},
                           f"oracles for forget_set_{forget_id}", log)
    forget = read_forget_set(source, forget_id, n_train, log)
    keep = np.ones(n_train, dtype=bool)
    keep[forget] = False
    retain = np.flatnonzero(keep)
    # The forget files' order, decided as for the oracles' margins.
    order = forget_order(source, forget_id, forget, log)
    return read_logits(files, holdout, {"retain": len(retain), "forget": len(order), "val": n_val},
                       f"oracles for forget_set_{forget_id}", log, order=(retain, order, n_train))


def import_original_shard(config: dict, model_ids, n_train: int, log=print) -> dict:
    """A checkpoint payload like a training job's, with the published originals' weights.

    Each model records its file, the file's SHA-256 and its model id; the seed is
    unknown (-1) and the training time is not published (NaN).
    """
    import klomflow
    from klomflow import training

    source = source_of(config)
    records = []
    for model_id in model_ids:
        path = source.original_checkpoint(model_id)
        model = load_published_model(path)
        records.append({
            "index": int(model_id), "seed": -1, "model_id": int(model_id),
            "source_file": str(path), "source_sha256": file_sha256(path), "forget_set": None,
            "train_indices": np.arange(n_train, dtype=np.int32), "train_seconds": float("nan"),
            "state_dict": {name: value.detach().cpu().clone()
                           for name, value in model.state_dict().items()},
        })
        log(f"original model {model_id}: {path} loaded strictly into ResNet-9")
    return {"role": "original", "forget_set": None, "config": config,
            "klomflow_version": klomflow.__version__, "training_version": training.VERSION,
            "device": "imported", "source": source.describe(), "models": records}


def check_checkpoint_margins(model, x, stored_margins, labels, device, path) -> float:
    """The imported weights reproduce the published margins on the points `x` (eval, float32).

    The tolerance allows for TF32 convolutions on the GPU that wrote the files;
    a wrong normalisation or key mapping moves margins by far more.
    """
    from klomflow.margins import margins_from_logits
    from klomflow.training import predict_logits

    margins = margins_from_logits(predict_logits(model.to(device), x, device), labels)
    difference = np.abs(margins - stored_margins)
    worst = float(difference.max())
    if not margins_agree(stored_margins, margins).all():
        raise PublishedError(f"{path}: the imported weights do not reproduce the published "
                             f"margins (largest difference {worst:.3g}); the inputs' normalisation "
                             f"or the key mapping differs from the published one")
    return worst


def do_nothing_runs(n_models: int, forget_set: str, method: str, config_id: str):
    """Runs table of do_nothing on imported originals: their published margins, no job."""
    import pandas as pd

    return pd.DataFrame({
        "forget_set": forget_set, "method": method, "config_id": config_id,
        "index": np.arange(n_models), "seed": -1, "original_seed": -1,
        "unlearning_seconds": 0.0, "diverged": False, "changed_weights": 0,
    })


def source_manifest(paths, root) -> dict:
    """{path relative to the folder: SHA-256} of every published file a run read."""
    root = Path(root)
    manifest = {}
    for path in sorted({str(path) for path in paths}):
        relative = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path)
        manifest[str(relative)] = file_sha256(path)
    return manifest


# EasyDUB's check: do_nothing on forget set 2, originals 0-99 against oracles 0-99, p95 KLOM
# per split (PUBLISHED.md 2.3). Its README and its regenerated figure disagree on retain and
# val; the check says which one a run reproduces. (name, {split: p95}, tolerance): the README
# prints 4 decimals; the figure's values are read off its dashed lines.
EASYDUB_CHECK_FORGET_SET = 2
EASYDUB_CHECK_MODELS = 100
EASYDUB_CHECK_REFERENCES = (
    ("EasyDUB README (eval_pretrain.py output)",
     {"retain": 0.3191, "forget": 9.2647, "val": 0.2639}, 0.001),
    ("EasyDUB figure assets/compute_vs_klom.png (read off the plot)",
     {"retain": 0.63, "forget": 9.26, "val": 0.66}, 0.03),
)
_CHECK_SPLITS = ("retain", "forget", "val")
_REFERENCE_KLOM = {"bins": 20, "eps": 1e-5, "clip": 100.0, "binning": "reference",
                   "direction": "unlearned_to_oracle"}


def easydub_check_report(table, config: dict) -> str | None:
    """This run's p95 KLOM of do_nothing on EasyDUB's forget set 2 beside both published
    triples, and which one it reproduces; None unless the run scores that set from an
    EasyDUB folder. `table`: klom.parquet's rows."""
    source = config["models"].get("source") or {}
    names = [name for name, spec in config["forget_sets"].items()
             if spec.get("kind") == "published" and spec.get("id") == EASYDUB_CHECK_FORGET_SET]
    if source.get("layout") != "easydub" or not names:
        return None
    rows = table[(table["forget_set"] == names[0]) & (table["method"] == "do_nothing")]
    if not set(_CHECK_SPLITS) <= set(rows["split"]):
        return None
    ours = {split: float(rows.loc[rows["split"] == split, "klom_p95"].iloc[0])
            for split in _CHECK_SPLITS}
    floor = table[(table["forget_set"] == names[0]) & (table["method"] == "oracle_holdout")]
    lines = [f"EasyDUB check: p95 KLOM of do_nothing on forget set {EASYDUB_CHECK_FORGET_SET} "
             f"({names[0]})",
             f"  {'split':<8}{'this run':>10}{'README':>10}{'figure':>10}{'noise floor':>13}"]
    for split in _CHECK_SPLITS:
        noise = floor.loc[floor["split"] == split, "klom_p95"]
        noise_text = f"{float(noise.iloc[0]):>13.4f}" if len(noise) else f"{'-':>13}"
        lines.append(f"  {split:<8}{ours[split]:>10.4f}"
                     + "".join(f"{ref[split]:>10.4f}" for _, ref, _ in EASYDUB_CHECK_REFERENCES)
                     + noise_text)
    first = rows.iloc[0]
    differences = []
    counts = {"originals": int(first.get("n_unlearned", -1)),
              "oracles": int(first.get("n_oracle", -1))}
    for what, count in counts.items():
        if count != EASYDUB_CHECK_MODELS:
            differences.append(f"{count} {what} (the reference: {EASYDUB_CHECK_MODELS})")
    for option, value in _REFERENCE_KLOM.items():
        column = f"klom_{option}"
        found = first.get(column, value)
        found = found.item() if isinstance(found, np.generic) else found  # np.int64(10) -> 10
        if found != value:
            differences.append(f"klom.{option} {found!r} (the reference: {value!r})")
    if differences:
        lines.append("  Not comparable with either: " + "; ".join(differences) + ".")
        return "\n".join(lines)
    reproduced = False
    for name, reference, tolerance in EASYDUB_CHECK_REFERENCES:
        if all(abs(ours[split] - reference[split]) <= tolerance for split in _CHECK_SPLITS):
            lines.append(f"  Reproduces the {name}: every split within {tolerance}.")
            reproduced = True
    if not reproduced:
        lines.append("  Reproduces neither: " + "; ".join(
            f"largest difference from the {name} "
            f"{max(abs(ours[s] - ref[s]) for s in _CHECK_SPLITS):.4f} (tolerance {tolerance})"
            for name, ref, tolerance in EASYDUB_CHECK_REFERENCES) + ".")
    return "\n".join(lines)


# Written by rule record_published_source; every table's provenance holds it.
MANIFEST_PATH = "results/source/manifest.json"


def source_provenance(config: dict, manifest_path=MANIFEST_PATH) -> dict:
    """{"source": layout, folder and the SHA-256 of every published file read}; {} when training."""
    import json

    source = Source.from_config(config)
    if source is None:
        return {}
    path = Path(manifest_path)
    if not path.exists():
        raise PublishedError(f"{path} is missing: rule record_published_source writes it before "
                             f"any table")
    return {"source": source.describe() | {"files": json.loads(path.read_text())}}
