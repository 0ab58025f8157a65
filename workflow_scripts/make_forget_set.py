import pandas as pd
from workflow_job import script_context

from klomflow.forget_sets import make_forget_set
from klomflow.io import save_array
from klomflow.published import Source

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
train_labels = points.loc[points["split"] == "train", "label"].to_numpy()
name = snakemake.wildcards.forget_set
indices = make_forget_set(name, snakemake.params.spec, train_labels,
                          source=Source.from_config(config), log=log)
save_array(snakemake.output.indices, indices)
log(f"forget set {name}: {len(indices)} of {len(train_labels)} training points")
