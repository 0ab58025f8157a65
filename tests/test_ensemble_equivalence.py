"""Ensemble-trained oracles are statistically the sequentially trained ones (KLOM).

Bit-identity is not expected (float summation order differs), so the claim is
KLOM's own: N oracles of a forget set trained as one ensemble, scored against
N sequentially trained oracles of the same forget set but other seeds, sit at
the noise floor for that N, the KLOM of two sequential sets of other seeds.

Digits with the repository's default recipe, N = 50 per side, the three
splits of a 100-point random forget set. KLOM.md's same-distribution floor at
N = 50 is p95 1.69 (mean 0.85); two sequential sets of other seeds measured
p95 1.61 / 1.75 / 1.74 (forget / retain / validation) here.
Tolerance: the ensemble set's p95 and mean per split may exceed that measured
floor by at most 20%. Measured: within 1% (1.61 / 1.75 / 1.72). KLOM at N = 50
is a blunt instrument (margins shifted by half their seed-to-seed spread raise
p95 by only ~20%), so a second test asks more: the ensemble set and the first
sequential set share seeds, so in a correct ensemble they are the same models
up to float noise grown over training, and their KLOM sits far below the
floor (measured p95 0.13, median margin difference 1e-6). An ensemble that
got a model's initialisation or shuffle wrong would train another model, and
that KLOM would rise to the floor (two sets of other seeds: 1.5-1.9).
"""

import numpy as np
import pytest
import torch
import yaml
from workflow import REPOSITORY

from klomflow.config import validate
from klomflow.jobs.runs import dataset_for, train_shard
from klomflow.metrics.klom import klom_per_point
from klomflow.metrics.margins import margins_from_logits

N = 50
TOLERANCE = 1.2
CPU = torch.device("cpu")


def oracle_margins(config, shard, forget, ensemble, base_dir):
    config = dict(config, train=dict(config["train"], ensemble=ensemble))
    _, logits = train_shard(config, "oracle", shard, base_dir / f"{shard}_{ensemble}",
                            forget_set="random_100", forget_indices=forget,
                            log=lambda message: None, device=CPU)
    labels = dataset_for(config).eval_y.numpy()
    return margins_from_logits(logits, labels)


@pytest.fixture(scope="module")
def margin_sets(tmp_path_factory):
    config = validate(yaml.safe_load((REPOSITORY / "config.yaml").read_text()))
    config["models"].update(n_oracles=N, n_holdout_oracles=N, seeds_per_job=N)
    dataset = dataset_for(config)
    forget = np.sort(np.random.default_rng(0).choice(dataset.n_train, 100, replace=False))
    folder = tmp_path_factory.mktemp("equivalence")
    splits = np.full(len(dataset.eval_y), "val", dtype=object)
    splits[:dataset.n_train] = "retain"
    splits[forget] = "forget"
    # Shard 0: oracle seeds 0..N-1; shard 1: the other seeds N..2N-1.
    return {
        "ensemble": oracle_margins(config, 0, forget, True, folder),
        "sequential": oracle_margins(config, 0, forget, False, folder),
        "other_seeds": oracle_margins(config, 1, forget, False, folder),
        "splits": splits,
    }


def split_statistics(first, second, splits):
    klom = klom_per_point(first, second)
    return {split: (np.percentile(klom[splits == split], 95), klom[splits == split].mean())
            for split in ("forget", "retain", "val")}


def test_ensemble_oracles_sit_at_the_noise_floor(margin_sets):
    floor = split_statistics(margin_sets["sequential"], margin_sets["other_seeds"],
                             margin_sets["splits"])
    measured = split_statistics(margin_sets["ensemble"], margin_sets["other_seeds"],
                                margin_sets["splits"])
    print({split: (f"{measured[split][0]:.2f} vs {floor[split][0]:.2f}") for split in floor})
    for split, (p95, mean) in measured.items():
        floor_p95, floor_mean = floor[split]
        # The sequential floor is KLOM.md's N = 50 floor (p95 1.69), give or take.
        assert 1.0 < floor_p95 < 2.6, (split, floor_p95)
        assert p95 <= TOLERANCE * floor_p95, (split, p95, floor_p95)
        assert mean <= TOLERANCE * floor_mean, (split, mean, floor_mean)


def test_ensemble_models_are_the_sequential_models_of_the_same_seeds(margin_sets):
    floor = split_statistics(margin_sets["sequential"], margin_sets["other_seeds"],
                             margin_sets["splits"])
    same_seeds = split_statistics(margin_sets["ensemble"], margin_sets["sequential"],
                                  margin_sets["splits"])
    for split, (p95, _) in same_seeds.items():
        assert p95 < 0.5 * floor[split][0], (split, p95, floor[split][0])
