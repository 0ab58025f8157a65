from workflow_job import script_context

from functools import partial

import pandas as pd

from klomflow.config import model_seeds
from klomflow.io import load_array, load_logit_groups, save_parquet
from klomflow.jobs.provenance import provenance
from klomflow.reporting.tables import class_accuracy_table

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
forget_labels = snakemake.params.labels  # {class forget set: its label}, in input order
table = class_accuracy_table(
    partial(model_seeds, config),
    points["label"].to_numpy(),
    n_train=int((points["split"] == "train").sum()),
    original=load_array(snakemake.input.original),
    oracles={name: load_array(path) for name, path in zip(forget_labels, snakemake.input.oracle)},
    forget_labels=forget_labels,
    # Each runs table names its forget set, method entry and config_id.
    unlearned=[(load_array(margins), pd.read_parquet(runs))
               for margins, runs in zip(snakemake.input.unlearned, snakemake.input.runs)],
    # Top-1 accuracy from each group's logit shards; published models have margins only.
    logits_of=load_logit_groups(snakemake.params.logit_groups),
)
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} class-accuracy rows over {len(forget_labels)} class forget sets")
