from workflow_job import script_context

import pandas as pd

from klomflow.jobs.forget_sets import write_forget_set

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
name, spec = snakemake.wildcards.manipulation, snakemake.params.spec
train = points[points["split"] == "train"]
chosen = train[train["manipulation"] == name]
changed = int((chosen["label"] != chosen["trained_label"]).sum())
probes = int(((points["split"] == "val_triggered") & (points["manipulation"] == name)).sum())
# Like a forget set's sidecar (klomflow/jobs/forget_sets.py), with what the manipulation did.
record = {
    "name": name,
    "kind": spec["kind"],
    "spec": spec,
    "size": len(chosen),
    "n_train": len(train),
    "labels_changed": changed,
    "triggered_validation_points": probes,
    "label_counts": {
        "true": chosen["label"].value_counts().sort_index().to_dict(),
        "trained": chosen["trained_label"].value_counts().sort_index().to_dict(),
    },
}
write_forget_set(
    snakemake.output.indices, snakemake.output.sidecar, chosen["point"].to_numpy(), record
)
log(
    f"manipulation {name} ({spec['kind']}): {len(chosen)} of {len(train)} training points, "
    f"{changed} labels changed, {probes} triggered validation points"
)
