from pathlib import Path

import pandas as pd

from klomflow.config import model_seeds
from klomflow.io import load_array, save_parquet
from klomflow.logs import script_context
from klomflow.paper import class_accuracy_rows, empty_class_accuracy, provenance
from klomflow.tables import NOISE_FLOOR_CONFIG_ID

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
labels = points["label"].to_numpy()
n_train = int((points["split"] == "train").sum())
forget_labels = snakemake.params.labels  # {class forget set: its label}
original = load_array(snakemake.input.original)
rows = []
for forget_set, oracle_path in zip(forget_labels, snakemake.input.oracle):
    label = forget_labels[forget_set]
    reference = {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
    rows += class_accuracy_rows(
        original, labels, n_train, label, reference | {"method": "original"},
        model_seeds(config, "original", None, len(original)))
    oracle = load_array(oracle_path)
    rows += class_accuracy_rows(
        oracle, labels, n_train, label, reference | {"method": "oracle"},
        model_seeds(config, "oracle", forget_set, len(oracle)))
for margins_path, runs_path in zip(snakemake.input.unlearned, snakemake.input.runs):
    runs = pd.read_parquet(runs_path)
    forget_set, method, config_id = Path(margins_path).with_suffix("").parts[-3:]
    rows += class_accuracy_rows(
        load_array(margins_path), labels, n_train, forget_labels[forget_set],
        {"forget_set": forget_set, "method": method, "config_id": config_id},
        runs["seed"].to_numpy())
table = pd.DataFrame(rows) if rows else empty_class_accuracy()
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} class-accuracy rows over {len(forget_labels)} class forget sets")
