from workflow_job import script_context

import pandas as pd

from klomflow.jobs.forget_sets import Job, derive, write_forget_set

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
train_labels = points.loc[points["split"] == "train", "label"].to_numpy()
name = snakemake.wildcards.forget_set
inputs = {key: getattr(snakemake.input, key) for key in snakemake.input.keys() if key != "points"}
job = Job(name, snakemake.params.derivation["spec"], inputs, train_labels, len(points), config,
          log)
indices, record = derive(job)
write_forget_set(snakemake.output.indices, snakemake.output.sidecar, indices, record)
log(f"forget set {name} ({record['kind']}): {len(indices)} of {len(train_labels)} training "
    f"points")
