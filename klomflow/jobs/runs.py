"""Jobs' work: train a shard of models, unlearn a shard of models.

A job handles a shard of seeds because starting a process costs more than
training a small model. Training checkpoints every model it finishes, and
the model (or, with `train.ensemble`, the ensemble of models) in progress
after its epochs, under a resume folder that is not a
declared output, so a killed job continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import klomflow
from klomflow.config import (
    MethodSetting,
    method_specs,
    model_seed,
    n_models,  # noqa: F401 (part of this module's interface)
    seeds_per_job,  # noqa: F401
    shard_indices,
    stable_hash,
    training_seed,
)
from klomflow.data import manipulations
from klomflow.data.datasets import Dataset, load_dataset
from klomflow.io import load_torch, save_torch
from klomflow.training import loop as training
from klomflow.training.datamodels import subset_masks
from klomflow.training.ensemble import max_members, train_ensemble
from klomflow.training.loop import Recipe, TrainingState, pick_device, predict_logits, train_model
from klomflow.training.models import build_model
from klomflow.unlearning import twins
from klomflow.unlearning.methods import METHODS, Method, UnlearningData

# Subset models train on random subsets of the training set, for datamodels.
ROLES = ("original", "oracle", "subset")


def indices_digest(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def dataset_for(config: dict, base_dir=".") -> Dataset:
    """The dataset every job trains, unlearns and evaluates on: with the config's
    `manipulations` applied (klomflow/data/manipulations.py), if any."""
    dataset = dict(config["dataset"])
    dataset["data_dir"] = str(Path(base_dir) / dataset["data_dir"])
    return manipulations.apply(load_dataset(dataset),
                               manipulations.resolved(config.get("manipulations")))


def data_identity(config: dict) -> list:
    """What defines the training data: the dataset section, and the manipulations where
    there are any (so that runs without them keep their fingerprints)."""
    return [config["dataset"]] + ([config["manipulations"]] if config.get("manipulations")
                                  else [])


def training_indices(n_train: int, forget_indices) -> np.ndarray:
    keep = np.ones(n_train, dtype=bool)
    if forget_indices is not None:
        keep[np.asarray(forget_indices)] = False
    return np.flatnonzero(keep)


def subset_training_indices(config: dict, n_train: int, indices: range) -> list[np.ndarray]:
    """Training indices of subset models `indices`: rows of datamodels.subset_masks."""
    seed = model_seed(config["models"]["base_seed"], "subset_masks")
    masks = subset_masks(n_train, indices.stop, config["datamodels"]["subset_fraction"], seed)
    return [np.flatnonzero(masks[index]) for index in indices]


def train_shard(config: dict, role: str, shard: int, resume_dir, forget_set: str | None = None,
                forget_indices=None, log=print, base_dir=".", device=None):
    """Train shard `shard` of `role` ("original", "oracle" of `forget_set`, or "subset").

    Returns (checkpoint payload, logits [n_models_in_shard, n_points, n_classes]).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "oracle" and forget_indices is None:
        raise ValueError("oracles need their forget set's indices")
    device = device or pick_device()
    dataset = dataset_for(config, base_dir).to(device)
    recipe = Recipe.from_config(config["train"])
    indices = shard_indices(config, role, shard)
    if role == "subset":
        keeps = subset_training_indices(config, dataset.n_train, indices)
    else:
        keeps = [training_indices(dataset.n_train, forget_indices)] * len(indices)
    resume_dir = Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    members = []
    for index, keep in zip(indices, keeps):
        seed = training_seed(config, role, forget_set, index)
        members.append({
            "index": index,
            "keep": keep,
            "seed": seed,
            "label": f"{role}{'/' + forget_set if forget_set else ''} model {index} (seed {seed})",
            # The fingerprint ties resume files to exactly this model's inputs, so a
            # changed config never resumes from a stale checkpoint.
            "fingerprint": stable_hash([*data_identity(config), config["model"], config["train"],
                                        seed, indices_digest(keep), training.VERSION]),
            "path": resume_dir / f"model_{index}.pt",
        })
    pending = []
    for member in members:
        finished = load_torch(member["path"]) if member["path"].exists() else None
        if finished is not None and finished["fingerprint"] == member["fingerprint"]:
            log(f"{member['label']}: already trained before the job restarted; reusing it")
        else:
            pending.append(member)
    if config["train"].get("ensemble", True) and len(pending) > 1:
        # Models train together only when they take the same steps: the same number
        # of training points (always so for originals, oracles and subset models).
        limit = max_members(device) or len(pending)
        for size in sorted({len(member["keep"]) for member in pending}):
            group = [member for member in pending if len(member["keep"]) == size]
            for start in range(0, len(group), limit):
                _train_together(config, dataset, group[start:start + limit], recipe, resume_dir,
                                device, log)
    else:
        for member in pending:
            keep_on_device = torch.as_tensor(member["keep"], device=device)
            x, y = dataset.train_x[keep_on_device], dataset.train_y[keep_on_device]
            finished = _train_one(config, dataset, x, y, recipe, member["seed"], member["label"],
                                  member["fingerprint"], resume_dir / "current.pt", device, log)
            save_torch(member["path"], finished)
    records, logits = [], []
    for member in members:
        finished = load_torch(member["path"])
        keep = member["keep"]
        records.append({
            "index": member["index"],
            "seed": member["seed"],
            "forget_set": forget_set,
            "train_indices": keep.astype(np.int32),
            "train_indices_sha256": indices_digest(keep),
            "train_seconds": finished["train_seconds"],
            # None: saved before the flag existed (whether shared is unknown).
            "train_seconds_amortised": finished.get("train_seconds_amortised"),
            "state_dict": finished["state_dict"],
        })
        logits.append(finished["logits"])
    checkpoint = {
        "role": role,
        "forget_set": forget_set,
        "config": config,
        "klomflow_version": klomflow.__version__,
        "training_version": training.VERSION,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "models": records,
    }
    return checkpoint, np.stack(logits)


def _epoch_checkpointer(config, path, fingerprint, labels, log):
    """on_epoch_end for train_model / train_ensemble: save the state at most every
    `models.resume_checkpoint_seconds` (thousands of tiny epochs would be slowed
    down by saving each; for a real model it costs little next to an epoch)."""
    interval = config["models"]["resume_checkpoint_seconds"]
    last_save = [time.monotonic()]

    def checkpoint_epoch(state: TrainingState):
        if time.monotonic() - last_save[0] >= interval:
            save_torch(path, {"fingerprint": fingerprint, "state": state})
            for label in labels:
                log(f"{label}: epoch checkpoint after epoch {state.epoch}")
            last_save[0] = time.monotonic()

    return checkpoint_epoch


def _saved_state(path, fingerprint):
    """The TrainingState saved at `path` if it belongs to `fingerprint`, else None."""
    if path.exists():
        saved = load_torch(path)
        if saved["fingerprint"] == fingerprint:
            return saved["state"]
    return None


def _train_one(config, dataset, x, y, recipe, seed, label, fingerprint, current_path, device,
               log):
    model = build_model(config["model"], dataset.input_shape, dataset.n_classes, seed)
    generator = torch.Generator().manual_seed(seed + 1)  # shuffling; init used `seed`
    started = time.perf_counter()
    train_model(model, x, y, recipe, generator, device, log=log, label=label,
                resume=_saved_state(current_path, fingerprint),
                on_epoch_end=_epoch_checkpointer(config, current_path, fingerprint, [label], log))
    seconds = time.perf_counter() - started
    logits = predict_logits(model, dataset.eval_x, device)
    state_dict = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
    return {"fingerprint": fingerprint, "state_dict": state_dict, "logits": logits,
            "train_seconds": seconds, "train_seconds_amortised": False}


def _train_together(config, dataset, members, recipe, resume_dir, device, log):
    """Train `members` as one ensemble (klomflow/training/ensemble.py) and save each model's
    finished file exactly as `_train_one` would.

    Each model is built from its seed and shuffled by its own generator, as in
    `_train_one`. Its recorded training time is its share of the ensemble's wall
    time (the ensemble's time over its size): what the model cost, amortised,
    and flagged as such (`train_seconds_amortised`).
    """
    labels = [member["label"] for member in members]
    models = [build_model(config["model"], dataset.input_shape, dataset.n_classes,
                          member["seed"]) for member in members]
    generators = [torch.Generator().manual_seed(member["seed"] + 1) for member in members]
    fingerprint = stable_hash([member["fingerprint"] for member in members])
    current_path = resume_dir / f"ensemble_{members[0]['index']}.pt"
    log(f"training {len(members)} models together as one ensemble: "
        f"{labels[0]} to {labels[-1]}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    states = train_ensemble(
        models, dataset.train_x, dataset.train_y, [member["keep"] for member in members], recipe,
        generators, device, log=log, labels=labels,
        resume=_saved_state(current_path, fingerprint),
        on_epoch_end=_epoch_checkpointer(config, current_path, fingerprint, labels, log),
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / len(members)
    model = models[0].to(device)
    for member, state in zip(members, states):
        model.load_state_dict(state)
        save_torch(member["path"], {"fingerprint": member["fingerprint"], "state_dict": state,
                                    "logits": predict_logits(model, dataset.eval_x, device),
                                    "train_seconds": seconds,
                                    "train_seconds_amortised": True})


def finish_resume(resume_dir) -> None:
    """Remove a job's resume folder once its outputs are written."""
    shutil.rmtree(resume_dir, ignore_errors=True)


def changed_weights(original_state: dict, state: dict) -> int:
    """How many entries of the state dict (weights, biases, buffers) differ from the original."""
    return int(sum((state[name].detach().cpu() != value.detach().cpu()).sum().item()
                   for name, value in original_state.items()))


def _is_finite(model) -> bool:
    return all(torch.isfinite(value).all() for value in model.state_dict().values()
               if value.is_floating_point())


def _timed(function, device):
    """(function(), its wall seconds), with CUDA's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def _run_method(config, method, setting, prepared, device, log):
    """Per prepared model (record, seed, model, data): (the method's result, its seconds,
    whether those seconds are amortised).

    With `train.ensemble` and a method that has an ensemble twin
    (klomflow/unlearning/twins/), all models run together and each is
    charged its share of the time (amortised: the ensemble's wall time over its
    models, not one model's wall time alone); otherwise one model after another,
    each timed alone.
    """
    twin = twins.together(method)
    if config["train"].get("ensemble", True) and twin is not None and len(prepared) > 1:
        log(f"{setting.entry}/{setting.config_id}: unlearning {len(prepared)} models together "
            "as one ensemble")
        outcomes = []
        limit = max_members(device) or len(prepared)
        for start in range(0, len(prepared), limit):
            chunk = prepared[start:start + limit]
            models = [model for _, _, model, _ in chunk]
            datas = [data for _, _, _, data in chunk]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(chunk[0][1])  # any stray global draw is seeded too
                results, seconds = _timed(partial(twin, models, datas, setting.params), device)
            outcomes += [(result, seconds / len(chunk), True) for result in results]
        return outcomes
    outcomes = []
    for _, seed, model, data in prepared:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # any stray global draw is seeded too
            outcomes.append((*_timed(partial(method.unlearn, model, data, setting.params), device),
                             False))
    return outcomes


def implementation(config: dict, name: str, base_dir=".") -> Method:
    """The Method named `name` among the config's specs, as planning read them: a built-in's
    from METHODS (where a test may stand one in), a user method's imported from its source."""
    spec = method_specs(config, base_dir)[name]
    return METHODS[name] if spec.source is None else spec.load()


def unlearn_shard(config: dict, setting: MethodSetting, forget_set: str, forget_indices,
                  original_checkpoint: dict, log=print, base_dir=".", device=None, extras=None):
    """Apply one method setting to every original model of a shard.

    Unlearned model k starts from original model k. Returns
    (logits [n_models_in_shard, n_points, n_classes], runs table, unlearned state dicts).
    """
    device = device or pick_device()
    method = implementation(config, setting.implementation, base_dir)
    dataset = dataset_for(config, base_dir).to(device)
    forget = torch.as_tensor(np.asarray(forget_indices), device=device)
    retain = torch.as_tensor(training_indices(dataset.n_train, forget_indices), device=device)
    eval_x = dataset.eval_x
    prepared = []  # per original model: (record, seed, model, data)
    for record in original_checkpoint["models"]:
        index = record["index"]
        seed = model_seed(config["models"]["base_seed"], "unlearn", forget_set, setting.entry,
                          setting.config_id, index)
        model = build_model(config["model"], dataset.input_shape, dataset.n_classes, seed)
        model.load_state_dict(copy.deepcopy(record["state_dict"]))
        model.to(device)
        data = UnlearningData(
            train_x=dataset.train_x, train_y=dataset.train_y, forget_indices=forget,
            retain_indices=retain, n_classes=dataset.n_classes,
            generator=torch.Generator().manual_seed(seed), device=device, log=log,
            extras=extras or {}, eval_x=eval_x,
        )
        prepared.append((record, seed, model, data))
    logits, rows, states = [], [], []
    outcomes = _run_method(config, method, setting, prepared, device, log)
    for (record, seed, model, _), (result, seconds, amortised) in zip(prepared, outcomes):
        index = record["index"]
        if method.outputs_logits:  # predicted logits; the weights stay the original's
            model_logits = np.asarray(result, dtype=np.float32)
            diverged = not np.isfinite(model_logits).all()
        else:
            model = result
            model_logits = predict_logits(model, eval_x, device)
            diverged = not (_is_finite(model) and np.isfinite(model_logits).all())
        correct = model_logits.argmax(-1) == dataset.eval_y.cpu().numpy()
        forget_accuracy = float(correct[np.asarray(forget_indices)].mean())
        changed = changed_weights(record["state_dict"], model.state_dict())
        log(f"{setting.entry}/{setting.config_id} on {forget_set}: model {index} (seed {seed}) "
            f"unlearned in {seconds:.2f}s{' (its share of the ensemble)' if amortised else ''}; "
            f"forget accuracy {forget_accuracy:.3f}; "
            f"{changed} weights changed"
            f"{'; DIVERGED (NaN or infinite outputs)' if diverged else ''}")
        if changed == 0 and not method.outputs_logits and method.name != "do_nothing":
            # Can be the method's honest answer (ssd selects no weight at a high alpha),
            # but then its KLOM is do_nothing's: say so where the user looks.
            log(f"WARNING: {setting.entry}/{setting.config_id} left every weight of model "
                f"{index} unchanged on {forget_set}")
        logits.append(model_logits)
        rows.append({"index": index, "seed": seed, "original_seed": record["seed"],
                     "unlearning_seconds": seconds, "unlearning_seconds_amortised": amortised,
                     "diverged": diverged,
                     "changed_weights": changed})
        states.append({name: value.detach().cpu().clone()
                       for name, value in model.state_dict().items()})
    return np.stack(logits), pd.DataFrame(rows), states
