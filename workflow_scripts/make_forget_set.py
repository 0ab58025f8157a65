from workflow_job import script_context

import pandas as pd

from klomflow.data.published.layout import Source
from klomflow.forget_sets.kinds import make_forget_set
from klomflow.jobs.forget_sets import sidecar, write_forget_set

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
train = points[points["split"] == "train"]
name = snakemake.wildcards.forget_set
spec = snakemake.params.spec
# CIFAR-100 with coarse labels: the fine label of each point, for subpopulation sets.
subclasses = train["subclass"].to_numpy() if "subclass" in train else None
# A manipulated run: each manipulation's S_m, for identified sets (docs/corrective.md).
manipulated = ({str(key): rows["point"].to_numpy() for key, rows in
                train[train["manipulated"]].groupby("manipulation")}
               if "manipulated" in train else {})
indices = make_forget_set(name, spec, train["label"].to_numpy(),
                          source=Source.from_setting(config["models"].get("source")), log=log,
                          train_subclasses=subclasses, manipulated_sets=manipulated)
write_forget_set(snakemake.output.indices, snakemake.output.sidecar, indices,
                 sidecar(name, spec, indices, len(train)))
log(f"forget set {name}: {len(indices)} of {len(train)} training points")
