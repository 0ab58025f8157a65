"""Reading the published files: existence checks at config time, forget sets, margins and
logits in the order the layouts store them, label recovery and the consistency checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from klomflow.data.published.layout import (
    MARGIN_ATOL,
    MARGIN_RTOL,
    PUBLISHED_FORGET_SETS,
    PublishedError,
    Source,
    file_sha256,
    margins_agree,
)

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
    from klomflow.metrics.margins import margins_from_logits

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
    at the sorted order (docs/published.md, "Checks on import"): the closer order is taken if
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
    from klomflow.metrics.margins import margins_from_logits

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
    from klomflow.metrics.margins import margins_from_logits

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


