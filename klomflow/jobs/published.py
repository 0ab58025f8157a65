"""What the import jobs do with a published source (workflow_scripts/ call these): margins,
logits and checkpoints of originals and oracles, the EasyDUB check, the source's manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from klomflow.data.published.layout import PublishedError, Source, file_sha256, margins_agree
from klomflow.data.published.reading import (
    as_float32,
    check_files,
    check_margins_at_labels,
    check_oracles_forgot,
    forget_order,
    load_tensor_file,
    oracle_margins,
    original_margins,
    read_forget_set,
    read_logits,
    recover_labels,
)
from klomflow.training.published_models import load_published_model

# --- what the import jobs do (workflow_scripts/ call these) ---------------------------------------


def source_of(config: dict) -> Source:
    source = Source.from_setting(config["models"].get("source"))
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
    from klomflow.training import loop as training

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
    from klomflow.metrics.margins import margins_from_logits
    from klomflow.training.loop import predict_logits

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
# per split (docs/published.md, "EasyDUB's published check"). Its README and its regenerated
# figure disagree on retain and val; the check says which one a run reproduces.
# (name, {split: p95}, tolerance): the README prints 4 decimals; the figure's values are
# read off its dashed lines.
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

    source = Source.from_setting(config["models"].get("source"))
    if source is None:
        return {}
    path = Path(manifest_path)
    if not path.exists():
        raise PublishedError(f"{path} is missing: rule record_published_source writes it before "
                             f"any table")
    return {"source": source.describe() | {"files": json.loads(path.read_text())}}
