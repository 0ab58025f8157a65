"""The corrective workflow end to end on the smallest corrective config, locally and through
the SLURM profile (docs/corrective.md).

The local run's outputs are checked by independent routes: the oracles' training indices
from their checkpoints, the "Retrain without S_f" row recomputed from the margins with the
literal one-point KLOM transcription, its top-1 metrics from the oracles' logits.
"""

import numpy as np
import pandas as pd
import pytest
from test_slurm import FAST_POLLING, PROFILE, slurm  # noqa: F401 (slurm: a fixture)
from workflow import snakemake, write_config

from klomflow.io import load_torch
from klomflow.metrics.klom import KlomOptions, klom_one_point_reference

pytestmark = pytest.mark.slow

N_ORACLES = 2


def smallest_corrective_config() -> dict:
    return {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.1},
        "models": {
            "n_originals": 2,
            "n_oracles": N_ORACLES,
            "n_holdout_oracles": 3,
            "seeds_per_job": 8,
        },
        "manipulations": {
            "confusion": {"kind": "interclass", "classes": [3, 8], "per_class": 10},
            "backdoor": {"kind": "badnets", "n_m": 20},
        },
        "forget_sets": {
            "backdoor_0.5": {"kind": "identified", "manipulation": "backdoor", "fraction": 0.5},
            "backdoor_1.0": {"kind": "identified", "manipulation": "backdoor", "fraction": 1.0},
            "confusion_1.0": {"kind": "identified", "manipulation": "confusion", "fraction": 1.0},
        },
        "methods": {"do_nothing": None, "gradient_descent": {"epochs": 1}},
        "klom": {"bins": 10},
    }


TABLES = (
    "results/tables/paper_corrective.parquet",
    "results/tables/corrective_klom.parquet",
    "results/tables/corrective_accuracy.parquet",
    "results/tables/klom.parquet",
)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corrective")
    write_config(folder, smallest_corrective_config())
    snakemake(folder, "--cores", "2")
    return folder / "results"


def test_outputs_name_their_reference(local_run):
    klom = pd.read_parquet(local_run / "tables/corrective_klom.parquet")
    assert set(klom["reference"]) == {"without_forget_set", "without_manipulated"}
    for _, rows in klom.groupby("reference"):
        assert {"noise_floor", "retrain_without_forget_set", "method"} <= set(rows["row"])
    assert set(klom["split"]) == {
        "forget",
        "unidentified",
        "retain",
        "val",
        "val_triggered",
        "val_pair",
    }
    table = pd.read_parquet(local_run / "tables/paper_corrective.parquet")
    assert set(table.columns) >= {"0.5", "1"}
    text = (local_run / "tables/paper_corrective.md").read_text()
    assert "Retrain without S_f" in text and "reference B" in text
    assert (local_run / "report/corrective/corrective.png").stat().st_size > 0
    sidecar = pd.read_json(local_run / "manipulations/backdoor.json", typ="series")
    assert sidecar["size"] == 20 and sidecar["triggered_validation_points"] > 300
    # The KLOM table's validation split holds the clean validation points only.
    points = pd.read_parquet(local_run / "data/points.parquet")
    n_val = int((points["split"] == "val").sum())
    main = pd.read_parquet(local_run / "tables/klom.parquet")
    assert set(main.loc[main["split"] == "val", "n_points"]) == {n_val}


def test_oracles_train_without_the_identified_points_only(local_run):
    points = pd.read_parquet(local_run / "data/points.parquet")
    backdoor = np.flatnonzero((points["split"] == "train") & (points["manipulation"] == "backdoor"))
    n_train = int((points["split"] == "train").sum())
    for name in ("backdoor_0.5", "backdoor_1.0"):
        forget = np.load(local_run / f"forget_sets/{name}.npy")
        assert np.isin(forget, backdoor).all()
        checkpoint = load_torch(local_run / f"models/oracle/{name}/shard_0.pt")
        for model in checkpoint["models"]:
            seen = set(model["train_indices"].tolist())
            assert seen == set(range(n_train)) - set(forget.tolist())
    assert len(np.load(local_run / "forget_sets/backdoor_0.5.npy")) == 10


def test_retrain_without_forget_set_row_recomputed(local_run):
    points = pd.read_parquet(local_run / "data/points.parquet")
    held_out = np.load(local_run / "margins/oracle_holdout/backdoor_0.5.npy")
    gold = np.load(local_run / "margins/oracle/backdoor_1.0.npy")
    assert held_out.shape[0] == 3 and gold.shape[0] == N_ORACLES
    forget = set(np.load(local_run / "forget_sets/backdoor_0.5.npy").tolist())
    options = KlomOptions(bins=10)
    klom = pd.read_parquet(local_run / "tables/corrective_klom.parquet")
    rows = klom[
        (klom["forget_set"] == "backdoor_0.5")
        & (klom["reference"] == "without_manipulated")
        & (klom["row"] == "retrain_without_forget_set")
    ].set_index("split")
    splits = {
        "unidentified": [
            p
            for p in range(len(points))
            if points["manipulation"][p] == "backdoor"
            and points["split"][p] == "train"
            and p not in forget
        ],
        "val_triggered": [p for p in range(len(points)) if points["split"][p] == "val_triggered"],
        "forget": sorted(forget),
    }
    for split, members in splits.items():
        values = [klom_one_point_reference(held_out[:, p], gold[:, p], options) for p in members]
        assert rows.loc[split, "n_points"] == len(members)
        assert rows.loc[split, "klom_p95"] == pytest.approx(np.percentile(values, 95))
        assert rows.loc[split, "klom_mean"] == pytest.approx(np.mean(values))
    # Its top-1: the held-out oracles' (models after the scored ones) logits, true labels.
    logits = np.load(local_run / "logits/oracle/backdoor_0.5/shard_0.npy")[N_ORACLES:]
    probes = np.flatnonzero(points["split"] == "val_triggered")
    truth = points["label"].to_numpy()
    accuracy = pd.read_parquet(local_run / "tables/corrective_accuracy.parquet")
    mine = accuracy[
        (accuracy["forget_set"] == "backdoor_0.5")
        & (accuracy["row"] == "retrain_without_forget_set")
    ]
    assert len(mine) == 3
    for model, row in zip(range(3), mine.itertuples()):
        predicted = logits[model].argmax(-1)
        assert row.accuracy_corrected == pytest.approx(np.mean(predicted[probes] == truth[probes]))
        assert row.attack_success == pytest.approx(np.mean(predicted[probes] == 0))


@pytest.mark.slurm
def test_corrective_run_through_the_slurm_profile_matches_the_local_run(slurm, local_run, tmp_path):  # noqa: F811 (slurm: the fixture)
    write_config(tmp_path, smallest_corrective_config())
    snakemake(tmp_path, "--profile", str(PROFILE), *FAST_POLLING, timeout=1200)
    for table in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / table), pd.read_parquet(local_run.parent / table)
        )
