"""The jobs that make forget sets: the sidecar of every set, and the derived kinds.

Every set writes `results/forget_sets/{name}.npy` (sorted unique int64 training
indices) and a sidecar `results/forget_sets/{name}.json`:
- `name`, `kind`, `spec` (the resolved keys, defaults filled in), `size`, `n_train`;
- derived kinds also: `scores` (float64 score of each member, in member order),
  `cut_score` (the score at rank size + 1, or per end for `side: both`: how close
  the set's edge is), `inputs` (sha256 of every input file: a set is tied to the
  subset models, datamodel or features it came from), `details` (singular
  values, gaps, ...) and `warnings`;
- `worst_case` sets: `"proxy": true` and `proxy_name`. They maximise a cheap
  surrogate of do-nothing forget KLOM (or, `bilevel`, Fan et al.'s forget loss);
  a method's KLOM on them bounds nothing.

The algorithms are in klomflow/forget_sets/ (numpy; ranking.py says how) and
klomflow/forget_sets/bilevel.py (torch); this module reads their inputs from the
workflow's files. torch is imported only by the kinds that run models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klomflow.data.published.layout import file_sha256
from klomflow.forget_sets import neighbours, principal_components, proxies, ranking
from klomflow.forget_sets.kinds import derived_error
from klomflow.io import load_array, save_array, write_text
from klomflow.metrics.margins import margins_from_logits


def sidecar(name: str, spec: dict, indices, n_train: int, **extra) -> dict:
    """The sidecar of a forget set; `extra` adds the derived kinds' fields."""
    record = {"name": name, "kind": spec["kind"], "spec": spec, "size": int(len(indices)),
              "n_train": int(n_train)}
    if spec["kind"] == "worst_case":
        record |= {"proxy": True, "proxy_name": spec["proxy"]}
    return record | extra


def write_forget_set(indices_path, sidecar_path, indices, record: dict) -> None:
    save_array(indices_path, np.asarray(indices, dtype=np.int64))
    write_text(sidecar_path, json.dumps(record, indent=1, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def subset_margins(logit_paths, mask_paths, train_labels):
    """(margins float32 [M, n_train] of the training points, masks bool [M, n_train])
    of the subset models, shard after shard."""
    train_labels = np.asarray(train_labels)
    n_train = len(train_labels)
    margins = [margins_from_logits(np.load(path, mmap_mode="r")[:, :n_train], train_labels)
               for path in logit_paths]
    masks = [np.asarray(load_array(path), dtype=bool) for path in mask_paths]
    margins, masks = np.concatenate(margins), np.concatenate(masks)
    if masks.shape != margins.shape:
        raise ValueError(f"subset masks {masks.shape} do not match subset margins "
                         f"{margins.shape}")
    return margins, masks


def fit_margin_datamodel(logit_paths, mask_paths, train_labels, ridge: float, path) -> None:
    """Θ [n_train, n_train] float32 at `path`: Θ[i, x] = effect of training point i on
    training point x's margin, the ridge datamodel fitted to the subset models'
    margins (klomflow/training/datamodels.py; the same masks and ridge as the logit
    datamodels). Streamed from the shard files a block of points at a time
    (klomflow/training/datamodel_files.py): at CIFAR-10 size it is 10 GB."""
    from klomflow.training.datamodel_files import fit_margin_datamodel_to_file

    fit_margin_datamodel_to_file(logit_paths, mask_paths, train_labels, ridge, path)


@dataclass
class Job:
    """What a derived forget set's job knows: its set, its input files by name
    (margin_datamodel, subset_logits, subset_masks, originals, embedding), the
    training labels, the number of evaluation points and the resolved config."""

    name: str
    spec: dict
    inputs: dict
    train_labels: np.ndarray
    n_points: int
    config: dict
    log: Callable
    base_dir: str = "."


def derive(job: Job) -> tuple[np.ndarray, dict]:
    """(sorted indices, sidecar) of a derived forget set; errors name
    `forget_sets.<name>` and the key at fault."""
    name, spec, inputs, log = job.name, job.spec, job.inputs, job.log
    key = f"forget_sets.{name}"
    n_train = len(job.train_labels)
    try:
        members, extra = _DERIVE[spec["kind"]](job)
    except ValueError as error:
        raise derived_error(key, error) from None
    indices = np.unique(np.asarray(members, dtype=np.int64))
    if indices.size != spec["size"]:
        raise derived_error(key, ValueError(f"{indices.size} distinct points chosen, "
                                            f"{spec['size']} asked"))
    hashes = {role: _digests(files) for role, files in inputs.items()}
    for warning in extra.get("warnings", []):
        log(f"{key}: WARNING: {warning}")
    return indices, sidecar(name, spec, indices, n_train, inputs=hashes, **extra)


def _digests(files) -> dict | str:
    if isinstance(files, (str, Path)):
        return file_sha256(files)
    return {str(path): file_sha256(path) for path in files}


def _member_scores(scores, members) -> list:
    return [float(scores[i]) for i in members]


def _datamodel_pc(job: Job):
    spec, inputs, log, name = job.spec, job.inputs, job.log, job.name
    theta = np.load(inputs["margin_datamodel"], mmap_mode="r")
    keys = {k: spec[k] for k in ("component", "rows", "center", "normalize", "zero_diagonal",
                                 "solver", "seed")}
    result = principal_components.pc_scores(theta, **keys)
    members, cut = principal_components.select_by_side(result["scores"], spec["size"], spec["side"])
    log(f"{name}: component {spec['component']} ({result['solver']} SVD), side {spec['side']}")
    details = {k: result[k] for k in ("singular_values", "relative_gaps", "skewness", "solver")}
    return members, {"scores": _member_scores(result["scores"], members), "cut_score": cut,
                     "details": details, "warnings": list(result["warnings"])}


def _nearest_neighbors(job: Job):
    spec, inputs = job.spec, job.inputs
    n_train = len(job.train_labels)
    if spec["embedding"] == "file":
        embedding = np.load(inputs["embedding"], mmap_mode="r", allow_pickle=False)
        embeddings = [np.asarray(neighbours.training_rows(embedding, n_train, job.n_points),
                                 dtype=np.float64)]
    elif spec["embedding"] == "datamodel":
        # Row x of Θᵀ: how every training point moves x's margin (x's datamodel).
        embeddings = [np.load(inputs["margin_datamodel"], mmap_mode="r").T]
    else:
        embeddings = penultimate_features(job.config, inputs["originals"], spec["models"],
                                          job.base_dir, job.log)
    members, similarity = neighbours.nearest_neighbors(embeddings, spec["anchor"], spec["size"],
                                                    spec["metric"], spec["include_anchor"])
    order = ranking.rank_order(similarity)
    left_out = order[~np.isin(order, members)]
    cut = float(similarity[left_out[0]]) if left_out.size else None
    return members, {"scores": _member_scores(similarity, members), "cut_score": cut}


def _worst_case(job: Job):
    spec, inputs, log, name = job.spec, job.inputs, job.log, job.name
    proxy = spec["proxy"]
    if proxy == "bilevel":
        members, weights, warnings = pilot_worst_case(job.config, name, spec, job.base_dir, log)
        return members, {"scores": _member_scores(weights, members), "cut_score": None,
                         "warnings": warnings}
    margins, masks = subset_margins(inputs["subset_logits"], inputs["subset_masks"],
                                    job.train_labels)
    if proxy == "inout_klom":
        from klomflow.options import KlomOptions

        scores = proxies.inout_klom_scores(margins, masks, KlomOptions(**job.config["klom"]))
    elif proxy == "self_influence":
        scores = proxies.self_influence_scores(np.load(inputs["margin_datamodel"], mmap_mode="r"),
                                               margins)
    else:  # datamodel_group: greedy, its gains are the scores
        theta = np.load(inputs["margin_datamodel"], mmap_mode="r")
        picked, gains = proxies.datamodel_group(theta, margins.std(axis=0), spec["size"])
        return picked, {"scores": [float(g) for g in gains], "cut_score": None}
    members, cut = principal_components.select_by_side(scores, spec["size"], "top")
    log(f"{name}: proxy {proxy}, scores of the set {float(np.min(scores[members])):.3g} to "
        f"{float(np.max(scores[members])):.3g}")
    return members, {"scores": _member_scores(scores, members), "cut_score": cut}


_DERIVE = {"datamodel_pc": _datamodel_pc, "nearest_neighbors": _nearest_neighbors,
           "worst_case": _worst_case}


def pilot_worst_case(config: dict, name: str, spec: dict, base_dir, log):
    """Fan et al.'s bilevel search. `lower_level: fine_tune` starts every outer step
    from a pilot model trained here with the run's recipe; the pilot's seed (role
    `pilot`) is none of the originals' or oracles'. `lower_level: retrain` starts
    from a fresh initialisation instead, so no pilot is trained."""
    import torch

    from klomflow.config import training_seed
    from klomflow.forget_sets.bilevel import bilevel_worst_case
    from klomflow.jobs.runs import dataset_for
    from klomflow.training.loop import Recipe, pick_device, train_model
    from klomflow.training.models import build_model

    device = pick_device()
    dataset = dataset_for(config, base_dir).to(device)
    seed = training_seed(config, "pilot", name, spec["seed"])
    model = build_model(config["model"], dataset.input_shape, dataset.n_classes, seed)
    if spec["lower_level"] == "fine_tune":
        recipe = Recipe.from_config(config["train"])
        train_model(model, dataset.train_x, dataset.train_y, recipe,
                    torch.Generator().manual_seed(seed + 1), device, log=log,
                    label=f"pilot model of {name} (seed {seed})")
    else:
        log(f"{name}: lower level retrain: every outer step trains from a fresh "
            f"initialisation; no pilot model")
    keys = {k: spec[k] for k in ("outer_steps", "inner_epochs", "inner_lr", "w_lr", "gamma",
                                 "lower_level", "seed")}
    # The lower level's batch size is the authors' (256), not the recipe's.
    return bilevel_worst_case(model, dataset.train_x, dataset.train_y, spec["size"],
                              device=device, log=log, **keys)


def penultimate_features(config: dict, checkpoint_paths, n_models: int, base_dir, log) -> list:
    """The input of each of the first `n_models` originals' last linear layer, for
    every training point, in eval mode on the CPU: float64 [n_train, d] per model."""

    from klomflow.io import load_torch
    from klomflow.jobs.runs import dataset_for
    from klomflow.training.models import build_model

    dataset = dataset_for(config, base_dir)
    records = [record for path in checkpoint_paths
               for record in load_torch(path)["models"]]
    records = sorted(records, key=lambda record: record["index"])[:n_models]
    if len(records) < n_models:
        raise ValueError(f"models: {n_models} originals asked, {len(records)} found")
    features = []
    for record in records:
        model = build_model(config["model"], dataset.input_shape, dataset.n_classes, 0)
        model.load_state_dict(record["state_dict"])
        model.eval()
        features.append(_last_linear_inputs(model, dataset.train_x))
        log(f"penultimate features of original model {record['index']}: "
            f"{tuple(features[-1].shape)}")
    return features


def _last_linear_inputs(model, x, batch_size: int = 1024):
    """float64 [n, d]: what the model's last nn.Linear receives for each row of x."""
    import torch

    last = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    captured = []
    hook = last.register_forward_hook(lambda _, args, __: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        hook.remove()
    return torch.cat(captured).flatten(1).double().numpy()
