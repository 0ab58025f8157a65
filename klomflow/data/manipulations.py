"""Manipulations of the training set before any model trains: the corrective setting.

Corrective unlearning (Goel et al., TMLR 2024) trains the originals on a training set D
in which a subset S_m was manipulated, and asks whether unlearning the identified part
S_f of S_m repairs the model. Three kinds, as the reference code
(drimpossible/corrective-unlearning-bench @ 8b08f06, src/datasets.py:73-167) makes them:

- `badnets`: n_m points drawn uniformly without replacement from the whole training set
  (target-class points included, datasets.py:81) get a trigger and the target label. The
  trigger is a bottom-right `trigger_size` x `trigger_size` square written into every
  channel of the (already normalised) input with one value, `trigger_value`; `max` is the
  reference's `corrupt_val`, the maximum over the normalised training inputs
  (main.py:36; on digits, 1.0, the white of the /16-scaled pixels). klomflow does not
  augment, so the trigger sits where the reference's sits after augmentation.
- `interclass`: `per_class` points of each of two classes swap their labels (a -> b,
  b -> a); `select: first` takes the first training indices of each class, as the
  reference does (datasets.py:99-102), `random` draws them with `seed`.
- `random_swap`: n_m random points have their labels permuted among themselves, so a
  point can keep its own label (datasets.py:86-91); every drawn point counts as
  manipulated, as in the reference.

Manipulations apply in the config's order; each chooses only among training points that
no earlier one chose (a choice of this tool: the reference runs one at a time). The
triggered validation images of a `badnets` manipulation (its validation images whose true
label is not the target, with the trigger, keeping their true labels) are new evaluation
points after the validation points: every model produces logits on them.

Choosing the points needs the labels only (numpy, no torch: the config checks and the
forget sets use it); writing the trigger needs the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("badnets", "interclass", "random_swap")
# Optional keys' defaults per kind (config/schema.yaml describes each key).
DEFAULTS = {
    "badnets": {"seed": 0, "target": 0, "trigger_size": 2, "trigger_value": "max"},
    "interclass": {"select": "first"},
    "random_swap": {"seed": 0},
}
# The split name of the triggered validation images in points.parquet and the tables.
TRIGGERED_SPLIT = "val_triggered"


class ManipulationError(ValueError):
    pass


@dataclass(frozen=True)
class Manipulation:
    """One resolved entry of the config's `manipulations` section."""

    name: str
    kind: str
    n_m: int = 0  # badnets, random_swap
    seed: int = 0
    target: int = 0  # badnets
    trigger_size: int = 2  # badnets: side of the bottom-right square, in pixels
    trigger_value: float | str = "max"  # badnets: a number, or "max" of the training inputs
    classes: tuple = ()  # interclass: (a, b)
    per_class: int = 0  # interclass
    select: str = "first"  # interclass: first | random

    @classmethod
    def from_spec(cls, name: str, spec: dict) -> Manipulation:
        values = DEFAULTS[spec["kind"]] | spec
        if values["kind"] == "interclass" and values["select"] == "random":
            values.setdefault("seed", 0)
        return cls(
            name=name,
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in values.items()
            },
        )


def resolved(manipulations: dict | None) -> list[Manipulation]:
    """The config's `manipulations` section as Manipulations, in the config's order."""
    return [Manipulation.from_spec(name, spec) for name, spec in (manipulations or {}).items()]


def choose(manipulations: list[Manipulation], train_labels) -> tuple[np.ndarray, np.ndarray]:
    """(labels the models train on [n_train], owner [n_train]: the index into
    `manipulations` of the one that chose each point, -1 for untouched points).

    ManipulationError names `manipulations.<name>.<key>` when a manipulation asks for
    more points than are left, or a class the training set lacks.
    """
    clean = np.asarray(train_labels, dtype=np.int64)
    labels, owner = clean.copy(), np.full(len(clean), -1, dtype=np.int64)
    classes = set(np.unique(clean).tolist())
    for position, manipulation in enumerate(manipulations):
        key = f"manipulations.{manipulation.name}"
        free = np.flatnonzero(owner == -1)
        if manipulation.kind == "interclass":
            chosen = []
            for label in manipulation.classes:
                if label not in classes:
                    raise ManipulationError(
                        f"{key}.classes: {label} is not a class of the "
                        f"training set {sorted(classes)}"
                    )
                members = free[clean[free] == label]
                if manipulation.per_class > len(members):
                    raise ManipulationError(
                        f"{key}.per_class={manipulation.per_class}: class "
                        f"{label} has {len(members)} free training points"
                    )
                if manipulation.select == "random":
                    rng = np.random.default_rng([manipulation.seed, label])
                    members = np.sort(rng.choice(members, manipulation.per_class, replace=False))
                chosen.append(members[: manipulation.per_class])
            a, b = manipulation.classes
            labels[chosen[0]], labels[chosen[1]] = b, a
            chosen = np.concatenate(chosen)
        else:
            if manipulation.n_m > len(free):
                raise ManipulationError(
                    f"{key}.n_m={manipulation.n_m}: only {len(free)} "
                    f"training points are left to manipulate"
                )
            rng = np.random.default_rng(manipulation.seed)
            chosen = np.sort(rng.choice(free, manipulation.n_m, replace=False))
            if manipulation.kind == "badnets":
                if manipulation.target not in classes:
                    raise ManipulationError(
                        f"{key}.target: {manipulation.target} is not a "
                        f"class of the training set {sorted(classes)}"
                    )
                labels[chosen] = manipulation.target
            else:  # random_swap: the chosen points' labels, permuted among them
                labels[chosen] = clean[chosen][rng.permutation(len(chosen))]
        owner[chosen] = position
    return labels, owner


def manipulated_sets(manipulations: list[Manipulation], train_labels) -> dict[str, np.ndarray]:
    """Sorted int64 training indices S_m of each manipulation, by name."""
    _, owner = choose(manipulations, train_labels)
    return {
        m.name: np.flatnonzero(owner == position).astype(np.int64)
        for position, m in enumerate(manipulations)
    }


def triggered_validation(manipulations: list[Manipulation], val_labels) -> list[np.ndarray]:
    """Per badnets manipulation (in order), the validation indices that get a triggered
    copy: those whose true label is not its target."""
    val_labels = np.asarray(val_labels)
    return [np.flatnonzero(val_labels != m.target) for m in manipulations if m.kind == "badnets"]


def trigger_mask(input_shape: tuple, size: int):
    """bool [*input_shape]: the bottom-right size x size square of every channel. Flat
    inputs of d = s*s values (digits' 64) are s x s images of one channel."""
    import torch

    if len(input_shape) == 1:
        side = int(round(input_shape[0] ** 0.5))
        if side * side != input_shape[0]:
            raise ManipulationError(
                f"a trigger needs square images; inputs have {input_shape[0]} values"
            )
        image_shape = (1, side, side)
    else:
        image_shape = tuple(input_shape)
    if size > min(image_shape[-2:]):
        raise ManipulationError(f"trigger_size={size} exceeds the {image_shape[-2:]} image")
    mask = torch.zeros(image_shape, dtype=torch.bool)
    mask[..., -size:, -size:] = True
    return mask.reshape(input_shape)


def apply(dataset, manipulations: list[Manipulation]):
    """`dataset` (klomflow.data.datasets.Dataset) as the originals see it: manipulated
    training labels and triggers, the clean labels and the owner of each training point
    kept, and the triggered validation images added as probe points."""
    import dataclasses

    import torch

    if not manipulations:
        return dataset
    clean = dataset.train_y.cpu().numpy()
    labels, owner = choose(manipulations, clean)
    train_x = dataset.train_x.clone()
    ceiling = float(dataset.train_x.max())
    probes, probe_labels, probe_source, probe_owner = [], [], [], []
    for position, manipulation in enumerate(manipulations):
        if manipulation.kind != "badnets":
            continue
        mask = trigger_mask(dataset.input_shape, manipulation.trigger_size)
        value = (
            ceiling if manipulation.trigger_value == "max" else float(manipulation.trigger_value)
        )
        chosen = torch.as_tensor(np.flatnonzero(owner == position))
        train_x[chosen] = torch.where(mask, torch.tensor(value), train_x[chosen])
        val_index = np.flatnonzero(dataset.val_y.cpu().numpy() != manipulation.target)
        selected = torch.as_tensor(val_index)
        probes.append(torch.where(mask, torch.tensor(value), dataset.val_x[selected]))
        probe_labels.append(dataset.val_y[selected])
        probe_source.append(val_index)
        probe_owner.append(np.full(len(val_index), position))
    names = np.array([m.name for m in manipulations] + [""], dtype=object)
    extra = {}
    if probes:
        extra = {
            "probe_x": torch.cat(probes),
            "probe_y": torch.cat(probe_labels),
            "probe_val_index": np.concatenate(probe_source).astype(np.int64),
            "probe_manipulation": names[np.concatenate(probe_owner)],
        }
    return dataclasses.replace(
        dataset,
        train_x=train_x,
        train_y=torch.as_tensor(labels, dtype=torch.int64),
        train_clean_y=clean.astype(np.int64),
        train_manipulation=names[owner],
        **extra,
    )
