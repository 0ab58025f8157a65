from workflow_job import script_context

from functools import partial

import pandas as pd

from klomflow.config import model_seeds
from klomflow.io import load_array, load_logit_groups, save_parquet
from klomflow.jobs.provenance import provenance
from klomflow.reporting.tables import accuracy_table

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
names = snakemake.params.forget_sets  # in the order of the forget-set and oracle inputs
table = accuracy_table(
    partial(model_seeds, config),
    snakemake.params.identity,
    n_train=int((points["split"] == "train").sum()),
    n_val=int((points["split"] == "val").sum()),
    labels=points["label"].to_numpy(),
    original=load_array(snakemake.input.original),
    forget_sets={name: load_array(path) for name, path in zip(names, snakemake.input.forget_sets)},
    oracles={name: load_array(path) for name, path in zip(names, snakemake.input.oracle)},
    # Each runs table names its forget set, method entry and config_id.
    unlearned=[(load_array(margins), pd.read_parquet(runs))
               for margins, runs in zip(snakemake.input.unlearned, snakemake.input.runs)],
    # Top-1 accuracy from each group's logit shards; published models have margins only.
    logits_of=load_logit_groups(snakemake.params.logit_groups),
)
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} accuracy rows")
