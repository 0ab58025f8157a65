"""Corrective unlearning (docs/corrective.md): the manipulations as the training jobs see
them, the identified forget sets, the corrective splits and the top-1 metrics.

The data each model saw is read from the training job itself (train_shard, with the
training step replaced by a recorder) and checked against scikit-learn's raw digits and
the reference's rules restated here (/work/shared/CORRECTIVE.md 1.2), not against
klomflow/data/manipulations.py.
"""

import numpy as np
import pandas as pd
import pytest
import torch

import klomflow.jobs.runs as runs
from klomflow.config import ConfigError, validate
from klomflow.data import manipulations
from klomflow.data.datasets import Dataset, digits_arrays, digits_split, points_table
from klomflow.forget_sets.kinds import identified_subset
from klomflow.reporting import corrective

TRIGGER_PIXELS = [54, 55, 62, 63]  # the bottom-right 2x2 of an 8x8 digit, row-major


def corrective_config(**overrides) -> dict:
    config = {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 1, "batch_size": 64, "ensemble": False},
        "models": {"n_originals": 2, "n_oracles": 2, "n_holdout_oracles": 2},
        "manipulations": {
            "confusion": {"kind": "interclass", "classes": [3, 8], "per_class": 20},
            "backdoor": {"kind": "badnets", "n_m": 29, "seed": 4, "target": 0},
        },
        "forget_sets": {
            "backdoor_0.5": {"kind": "identified", "manipulation": "backdoor", "fraction": 0.5},
            "backdoor_1.0": {"kind": "identified", "manipulation": "backdoor", "fraction": 1.0},
        },
        "methods": {"do_nothing": None},
        "klom": {},
    }
    return validate(config | overrides)


def raw_digits():
    """(pixels / 16 [n_train, 64], labels [n_train]) of the default split, as sklearn has them."""
    pixels, labels = digits_arrays()
    train, _ = digits_split(len(labels), 0.2, 0)
    return pixels[train] / 16.0, labels[train]


def seen_by_training(config, role, forget_indices=None, monkeypatch=None):
    """[(training indices, x, y)] per model: what train_shard handed to the training step."""
    seen = []

    def record(model, x, y, *args, **kwargs):
        seen.append((x.cpu().numpy().copy(), y.cpu().numpy().copy()))
        return model

    monkeypatch.setattr(runs, "train_model", record)
    checkpoint, _ = runs.train_shard(
        config,
        role,
        0,
        monkeypatch.tmp_path,
        forget_set="backdoor_0.5" if role == "oracle" else None,
        forget_indices=forget_indices,
        log=lambda message: None,
        device=torch.device("cpu"),
    )
    return [
        (record_["train_indices"].astype(np.int64), x, y)
        for record_, (x, y) in zip(checkpoint["models"], seen, strict=True)
    ]


@pytest.fixture
def patch(monkeypatch, tmp_path):
    monkeypatch.tmp_path = tmp_path
    return monkeypatch


def classify(raw_x, raw_y, x, y):
    """Per row seen: "clean" (as sklearn has it), "badnets" (trigger pixels at the data's
    maximum 1.0, every other pixel as sklearn has it, label 0), "swapped" (3 <-> 8)."""
    kinds = []
    others = np.setdiff1d(np.arange(64), TRIGGER_PIXELS)
    for rx, ry, sx, sy in zip(raw_x, raw_y, x, y):
        if np.array_equal(rx, sx) and ry == sy:
            kinds.append("clean")
        elif (
            np.allclose(sx[TRIGGER_PIXELS], 1.0) and np.allclose(sx[others], rx[others]) and sy == 0
        ):
            kinds.append("badnets")
        elif np.array_equal(rx, sx) and {int(ry), int(sy)} == {3, 8} and ry != sy:
            kinds.append("swapped")
        else:
            kinds.append("unexplained")
    return np.array(kinds)


def test_originals_train_on_the_manipulated_data(patch):
    config = corrective_config()
    raw_x, raw_y = raw_digits()
    points = points_table(runs.dataset_for(config))
    recorded = points[points["split"] == "train"]["manipulation"].to_numpy()
    for indices, x, y in seen_by_training(config, "original", monkeypatch=patch):
        assert np.array_equal(indices, np.arange(len(raw_y)))  # the whole training set
        kinds = classify(raw_x, raw_y, x, y)
        assert "unexplained" not in kinds
        # The reference's interclass rule: the first 20 training indices of class 3 and of
        # class 8 swap, and no other point of those classes does.
        for label in (3, 8):
            members = np.flatnonzero(raw_y == label)
            assert (kinds[members[:20]] == "swapped").all()
            assert (kinds[members[20:]] != "swapped").all()
        # 29 poisoned points from the whole training set (a target-class point whose corner
        # already reads 1.0 would look clean; the recorded set names them all).
        poisoned = recorded == "backdoor"
        assert poisoned.sum() == 29
        assert (kinds[~poisoned & (recorded != "confusion")] == "clean").all()
        assert np.isin(kinds[poisoned], ["badnets", "clean"]).all()
        assert (kinds[poisoned] == "badnets").sum() >= 27
        assert (y[poisoned] == 0).all()
        # points.parquet: both labels, and which point was manipulated.
        train = points[points["split"] == "train"]
        assert np.array_equal(train["label"].to_numpy(), raw_y)
        assert np.array_equal(train["trained_label"].to_numpy(), y)


def test_oracles_see_the_unidentified_points_manipulated_and_never_the_identified(patch):
    config = corrective_config()
    raw_x, raw_y = raw_digits()
    points = points_table(runs.dataset_for(config))
    manipulated = np.flatnonzero(
        (points["split"] == "train") & (points["manipulation"] == "backdoor")
    )
    forget = identified_subset(manipulated, 0.5, 0, "nested")
    for indices, x, y in seen_by_training(config, "oracle", forget, monkeypatch=patch):
        assert not np.isin(forget, indices).any()
        assert np.array_equal(indices, np.setdiff1d(np.arange(len(raw_y)), forget))
        kinds = classify(raw_x[indices], raw_y[indices], x, y)
        unidentified = np.isin(indices, np.setdiff1d(manipulated, forget))
        assert unidentified.sum() == 29 - len(forget) == 14
        assert (kinds[unidentified] == "badnets").sum() >= 12
        assert (y[unidentified] == 0).all()


def test_gold_standard_oracles_see_no_manipulated_point(patch):
    # One manipulation, so that its fraction-1.0 set is every manipulated point.
    config = corrective_config(manipulations={"backdoor": {"kind": "badnets", "n_m": 29}})
    raw_x, raw_y = raw_digits()
    points = points_table(runs.dataset_for(config))
    gold = np.flatnonzero(points["manipulated"])
    assert np.array_equal(identified_subset(gold, 1.0, 0, "nested"), gold)
    for indices, x, y in seen_by_training(config, "oracle", gold, monkeypatch=patch):
        kinds = classify(raw_x[indices], raw_y[indices], x, y)
        assert (kinds == "clean").all()
        assert len(indices) == len(raw_y) - 29


def test_identified_fractions_nested_or_independent():
    manipulated = np.arange(100, 172)  # 72 points, as interclass 36 per class
    sizes = {0.1: 7, 0.25: 18, 0.5: 36, 0.75: 54, 1.0: 72}  # half up: 7.2, 18, 36, 54
    nested = {f: identified_subset(manipulated, f, 3, "nested") for f in sizes}
    independent = {f: identified_subset(manipulated, f, 3, "independent") for f in sizes}
    for f, size in sizes.items():
        assert len(nested[f]) == len(independent[f]) == size
        assert np.isin(nested[f], manipulated).all() and np.isin(independent[f], manipulated).all()
    fractions = sorted(sizes)
    for small, large in zip(fractions, fractions[1:]):
        assert np.isin(nested[small], nested[large]).all()
    assert not all(
        np.isin(independent[s], independent[b]).all() for s, b in zip(fractions, fractions[1:])
    )
    assert len(identified_subset(np.arange(29), 0.5, 0, "nested")) == 15  # 14.5 rounds up


def test_random_swap_permutes_labels_among_the_chosen_points():
    labels = np.arange(500) % 10
    spec = manipulations.Manipulation.from_spec(
        "swap", {"kind": "random_swap", "n_m": 60, "seed": 2}
    )
    trained, owner = manipulations.choose([spec], labels)
    chosen = owner == 0
    assert chosen.sum() == 60
    assert np.array_equal(trained[~chosen], labels[~chosen])
    assert sorted(trained[chosen]) == sorted(labels[chosen])
    assert (trained[chosen] != labels[chosen]).sum() > 40


def test_cifar_trigger_is_the_normalised_maximum_in_every_channel():
    # CIFAR-shaped inputs normalised with per-channel constants, one white pixel somewhere:
    # the reference's corrupt_val is the maximum over the normalised tensors.
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    raw = torch.rand(12, 3, 32, 32) * 0.9
    raw[5, :, 0, 0] = 1.0
    x = (raw - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    y = torch.arange(12) % 3
    dataset = Dataset(
        "cifar10", x, y, x[:4].clone(), torch.tensor([0, 1, 2, 1]), 3, np.arange(12), np.arange(4)
    )
    spec = manipulations.Manipulation.from_spec(
        "backdoor", {"kind": "badnets", "n_m": 4, "target": 0, "trigger_size": 3}
    )
    result = manipulations.apply(dataset, [spec])
    expected = float(((1 - mean) / std).max())  # the green channel's white
    chosen = result.train_manipulation == "backdoor"
    patch = result.train_x[chosen][:, :, 29:, 29:]
    assert torch.allclose(patch, torch.full_like(patch, expected))
    outside = result.train_x.clone()
    outside[:, :, 29:, 29:] = 0
    reference = x.clone()
    reference[:, :, 29:, 29:] = 0
    assert torch.equal(outside, reference)
    assert (result.train_y[chosen] == 0).all()
    # Triggered validation images: the non-target ones, true labels kept, after val.
    assert result.probe_y.tolist() == [1, 2, 1]
    assert len(result.eval_x) == 12 + 4 + 3


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="manipulations.backdoor.n_m=5000"):
        corrective_config(manipulations={"backdoor": {"kind": "badnets", "n_m": 5000}})
    with pytest.raises(ConfigError, match="manipulations.backdoor: .*.bogus. was unexpected"):
        corrective_config(manipulations={"backdoor": {"kind": "badnets", "n_m": 5, "bogus": 1}})
    with pytest.raises(ConfigError, match="fraction 1.0"):
        corrective_config(
            forget_sets={
                "backdoor_0.5": {"kind": "identified", "manipulation": "backdoor", "fraction": 0.5}
            }
        )
    with pytest.raises(ConfigError, match="forget_sets.x.manipulation"):
        corrective_config(
            forget_sets={"x": {"kind": "identified", "manipulation": "nope", "fraction": 1.0}}
        )


def synthetic_points():
    """10 training points (0-2 backdoor, 3-4 confusion), 4 val, 3 triggered probes."""
    manipulation = ["backdoor"] * 3 + ["confusion"] * 2 + [""] * 5 + [""] * 4 + ["backdoor"] * 3
    return pd.DataFrame(
        {
            "point": np.arange(17),
            "split": ["train"] * 10 + ["val"] * 4 + ["val_triggered"] * 3,
            "label": [5, 3, 0, 3, 8, 1, 2, 3, 8, 9, 3, 8, 1, 0, 4, 3, 8],
            "trained_label": [0, 0, 0, 8, 3, 1, 2, 3, 8, 9, 3, 8, 1, 0, 4, 3, 8],
            "manipulation": pd.Series(manipulation, dtype="string"),
            "manipulated": [True] * 5 + [False] * 12,
        }
    )


def test_corrective_splits_by_brute_force():
    points = synthetic_points()
    badnets = {"name": "backdoor", "kind": "badnets", "target": 0}
    masks = corrective.corrective_splits(points, badnets, [1])
    as_sets = {split: set(np.flatnonzero(mask)) for split, mask in masks.items()}
    assert as_sets == {
        "forget": {1},
        "unidentified": {0, 2},
        "retain": {0, 2, 3, 4, 5, 6, 7, 8, 9},
        "val": {10, 11, 12, 13},
        "val_triggered": {14, 15, 16},
    }
    interclass = {"name": "confusion", "kind": "interclass", "classes": [3, 8]}
    masks = corrective.corrective_splits(points, interclass, [3])
    assert set(np.flatnonzero(masks["unidentified"])) == {4}
    assert set(np.flatnonzero(masks["val_pair"])) == {10, 11}


def test_top1_metrics_by_brute_force():
    points = synthetic_points()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 17, 10))
    badnets = {"name": "backdoor", "kind": "badnets", "target": 0}
    rows = corrective.top1_rows(logits, points, badnets, [1], {"m": 1})
    for model, row in enumerate(rows):
        predicted = [int(np.argmax(logits[model, p])) for p in range(17)]
        truth = points["label"].tolist()
        probes = [14, 15, 16]
        assert row["accuracy_corrected"] == np.mean([predicted[p] == truth[p] for p in probes])
        assert row["attack_success"] == np.mean([predicted[p] == 0 for p in probes])
        assert row["accuracy_rest"] == np.mean([predicted[p] == truth[p] for p in range(10, 14)])
        assert row["manipulated_accuracy"] == np.mean([predicted[p] == truth[p] for p in (0, 1, 2)])
        assert row["unidentified_accuracy"] == np.mean([predicted[p] == truth[p] for p in (0, 2)])
    interclass = {"name": "confusion", "kind": "interclass", "classes": [3, 8]}
    rows = corrective.top1_rows(logits, points, interclass, [3], {})
    for model, row in enumerate(rows):
        predicted = [int(np.argmax(logits[model, p])) for p in range(17)]
        # val 10 (a 3) and 11 (an 8) are the pair; 12, 13 the rest; swapped: 3 -> 8, 8 -> 3.
        assert row["accuracy_corrected"] == np.mean([predicted[10] == 3, predicted[11] == 8])
        assert row["attack_success"] == np.mean([predicted[10] == 8, predicted[11] == 3])
        assert row["accuracy_rest"] == np.mean([predicted[12] == 1, predicted[13] == 0])


def test_random_swap_top1_by_brute_force():
    # Points 0-2 as a random_swap set: true labels 5, 3, 0, trained 0, 0, 0 (0 and 1 changed).
    points = synthetic_points()
    logits = np.random.default_rng(1).normal(size=(4, 17, 10))
    for model, zeros in enumerate([(0, 1, 2), (0,), (2,), ()]):  # where each predicts 0
        logits[model, list(zeros), 0] = 10.0
    swap = {"name": "backdoor", "kind": "random_swap"}
    rows = corrective.top1_rows(logits, points, swap, [2], {})
    for model, row in enumerate(rows):
        predicted = logits[model].argmax(-1)
        assert row["accuracy_corrected"] == np.mean(
            [predicted[0] == 5, predicted[1] == 3, predicted[2] == 0]
        )
        assert row["attack_success"] == np.mean([predicted[0] == 0, predicted[1] == 0])
        assert row["unidentified_accuracy"] == np.mean([predicted[0] == 5, predicted[1] == 3])
