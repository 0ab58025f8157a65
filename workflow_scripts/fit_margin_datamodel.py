from workflow_job import script_context

import pandas as pd

from klomflow.jobs.forget_sets import fit_margin_datamodel

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
train_labels = points.loc[points["split"] == "train", "label"].to_numpy()
ridge = snakemake.params.fit["ridge"]
# Shards are listed in seed order; row m of the masks goes with row m of the logits.
fit_margin_datamodel(snakemake.input.logits, snakemake.input.masks, train_labels, ridge,
                     snakemake.output.theta)
log(f"margin datamodel of {len(train_labels)} training points from "
    f"{len(snakemake.input.masks)} subset-model shards (ridge {ridge})")
