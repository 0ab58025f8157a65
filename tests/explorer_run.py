"""A synthetic run's results folder in the workflow's own layout (docs/outputs.md), for the
explorer page's tests and benchmarks/explorer.py: margins drawn at random, every table made
by the package's own reductions."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from klomflow.io import save_array, save_parquet
from klomflow.metrics.klom import DEFAULT_OPTIONS
from klomflow.reporting.names import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID
from klomflow.reporting.tables import klom_points, klom_table, with_forget_set_kinds


def write_run(
    folder: Path,
    n_train=300,
    n_val=100,
    n_models=20,
    n_classes=10,
    methods=("do_nothing", "gradient_ascent"),
    forget_size=20,
    seed=0,
    options=DEFAULT_OPTIONS,
    proxy: str | None = None,
    source: str | None = None,
    image_shape=(8, 8),
) -> tuple[Path, np.ndarray]:
    """Writes folder/results; returns (the results folder, images uint8 [n_points, *shape])."""
    results = Path(folder) / "results"
    generator = np.random.default_rng(seed)
    n_points = n_train + n_val
    labels = generator.integers(0, n_classes, n_points)
    save_parquet(
        results / "data" / "points.parquet",
        pd.DataFrame(
            {
                "point": np.arange(n_points),
                "split": ["train"] * n_train + ["val"] * n_val,
                "label": labels,
                "source_index": np.r_[np.arange(n_train), np.arange(n_val)],
            }
        ),
    )
    forget = np.sort(generator.choice(n_train, forget_size, replace=False))
    name = "worst_20" if proxy else "random_20"
    spec = (
        {"kind": "worst_case", "proxy": proxy, "size": forget_size}
        if proxy
        else {"kind": "random", "size": forget_size, "seed": seed}
    )
    save_array(results / "forget_sets" / f"{name}.npy", forget)
    (results / "forget_sets" / f"{name}.json").write_text(
        json.dumps(
            {
                "name": name,
                "kind": spec["kind"],
                "spec": spec,
                "size": forget_size,
                "n_train": n_train,
            }
            | ({"proxy": True, "proxy_name": proxy} if proxy else {})
        )
    )
    centre = generator.normal(3, 2, n_points)
    spread = generator.uniform(0.3, 1.5, n_points)

    def margins(shift):
        return (centre + shift + spread * generator.standard_normal((n_models, n_points))).astype(
            np.float32
        )

    original = margins(0)
    oracle_shift = np.zeros(n_points)
    oracle_shift[forget] = -3
    oracle, holdout = margins(oracle_shift), margins(oracle_shift)
    save_array(results / "margins" / "original.npy", original)
    save_array(results / "margins" / "oracle" / f"{name}.npy", oracle)
    save_array(results / "margins" / NOISE_FLOOR / f"{name}.npy", holdout)
    entries = []
    settings = [(NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID, holdout)]
    for k, method in enumerate(methods):
        unlearned = original if method == "do_nothing" else margins(oracle_shift * k / len(methods))
        settings.append((method, f"{k:010x}", unlearned))
    for method, config_id, unlearned in settings:
        if method != NOISE_FLOOR:
            save_array(
                results / "margins" / "unlearned" / name / method / f"{config_id}.npy", unlearned
            )
        points, counts = klom_points(unlearned, oracle, forget, n_train, options)
        identity = {
            "dataset": "synthetic",
            "model": "none",
            "forget_set": name,
            "method": method,
            "config_id": config_id,
            "implementation": method,
            "params": "{}",
            "diagnostic": False,
        }
        metadata = {"identity": identity, "counts": counts, "klom_options": vars(options)}
        save_parquet(results / "klom" / name / method / f"{config_id}.parquet", points, metadata)
        entries.append((points, metadata))
    table = with_forget_set_kinds(klom_table(entries), {name: spec})
    save_parquet(results / "tables" / "klom.parquet", table)
    accuracy = [
        {
            "forget_set": name,
            "method": method,
            "config_id": config_id,
            "seed": seed,
            "forget_accuracy": float((unlearned[seed, forget] > 0).mean()),
            "retain_accuracy": 0.9,
            "val_accuracy": 0.8,
            "unlearning_seconds": 1.5,
            "unlearning_seconds_amortised": True,
            "diverged": False,
        }
        for method, config_id, unlearned in settings[1:]
        for seed in range(n_models)
    ]
    save_parquet(results / "tables" / "accuracy.parquet", pd.DataFrame(accuracy))
    if source:
        (results / "source").mkdir(parents=True, exist_ok=True)
        (results / "source" / "manifest.json").write_text(
            json.dumps({f"{source}/margins.npy": "0" * 64})
        )
    images = generator.integers(0, 256, (n_points, *image_shape), dtype=np.uint8)
    return results, images
