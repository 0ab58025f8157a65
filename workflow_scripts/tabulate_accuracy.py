from pathlib import Path

import pandas as pd

from klomflow.io import load_array, load_shard_groups, save_parquet
from klomflow.logs import script_context
from klomflow.paper import provenance
from klomflow.tables import accuracy_table

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
names = [Path(path).stem for path in snakemake.input.forget_sets]
# Logit shards grouped by folder: results/logits/oracle/{forget_set}, and
# results/logits/unlearned/{forget_set}/{method}/{config_id}.
oracles = load_shard_groups(snakemake.input.oracle)
unlearned = load_shard_groups(snakemake.input.unlearned)
table = accuracy_table(
    config,
    snakemake.params.identity,
    n_train=int((points["split"] == "train").sum()),
    labels=points["label"].to_numpy(),
    original=next(iter(load_shard_groups(snakemake.input.original).values())),
    forget_sets={name: load_array(path) for name, path in zip(names, snakemake.input.forget_sets)},
    # The scored oracles are the first n_oracles of each forget set's shards.
    oracles={Path(folder).name: logits[:snakemake.params.n_oracles]
             for folder, logits in oracles.items()},
    unlearned=[(unlearned[str(Path("results/logits/unlearned",
                                   *Path(runs).with_suffix("").parts[-3:]))],
                pd.read_parquet(runs))
               for runs in snakemake.input.runs],
)
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} accuracy rows (top-1, from logits)")
