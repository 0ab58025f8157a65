from pathlib import Path

import pandas as pd

from klomflow.config import training_seed
from klomflow.io import load_shard_groups, save_parquet
from klomflow.logs import script_context
from klomflow.paper import class_accuracy_rows, empty_class_accuracy, provenance
from klomflow.tables import NOISE_FLOOR_CONFIG_ID

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
labels = points["label"].to_numpy()
n_train = int((points["split"] == "train").sum())
forget_labels = snakemake.params.labels  # {class forget set: its label}
# Logit shards grouped by folder (klomflow.io.load_shard_groups): top-1 accuracy.
original = next(iter(load_shard_groups(snakemake.input.original).values()), None)
oracles = load_shard_groups(snakemake.input.oracle)
unlearned = load_shard_groups(snakemake.input.unlearned)
rows = []
for forget_set, label in forget_labels.items():
    reference = {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
    rows += class_accuracy_rows(
        original, labels, n_train, label, reference | {"method": "original"},
        [training_seed(config, "original", None, k) for k in range(len(original))])
    # The scored oracles are the first n_oracles of the forget set's shards.
    oracle = oracles[f"results/logits/oracle/{forget_set}"][:snakemake.params.n_oracles]
    rows += class_accuracy_rows(
        oracle, labels, n_train, label, reference | {"method": "oracle"},
        [training_seed(config, "oracle", forget_set, k) for k in range(len(oracle))])
for runs_path in snakemake.input.runs:
    runs = pd.read_parquet(runs_path)
    forget_set, method, config_id = Path(runs_path).with_suffix("").parts[-3:]
    rows += class_accuracy_rows(
        unlearned[str(Path("results/logits/unlearned", forget_set, method, config_id))],
        labels, n_train, forget_labels[forget_set],
        {"forget_set": forget_set, "method": method, "config_id": config_id},
        runs["seed"].to_numpy())
table = pd.DataFrame(rows) if rows else empty_class_accuracy()
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} class-accuracy rows over {len(forget_labels)} class forget sets")
