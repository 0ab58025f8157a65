from workflow_job import script_context

import pandas as pd

from klomflow.io import load_array, save_parquet
from klomflow.jobs.provenance import provenance
from klomflow.metrics.klom import KlomOptions
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.selection import interval_entry
from klomflow.reporting.tables import point_splits, with_forget_set_kinds

log, config = script_context(snakemake)
params = snakemake.params.resampling
method = snakemake.wildcards.get("method", NOISE_FLOOR)
points = pd.read_parquet(snakemake.input.points)
n_train = int((points["split"] == "train").sum())
splits = point_splits(n_train, int((points["split"] == "val").sum()),
                      load_array(snakemake.input.forget_set), len(points))
holdout = list(snakemake.input.get("holdout", [])) or [None] * len(params["config_ids"])
candidates = [
    {"config_id": config_id, "scored": pd.read_parquet(scored),
     "holdout": pd.read_parquet(held_out) if held_out else None}
    for config_id, scored, held_out in zip(params["config_ids"], snakemake.input.scored, holdout)
]
margins = dict(zip(params["config_ids"], snakemake.input.unlearned))
resampling = params["resampling"]
table = interval_entry(
    snakemake.wildcards.forget_set, method, params["diagnostic"], candidates,
    load_margins=lambda config_id: load_array(margins[config_id]),
    oracle_margins=load_array(snakemake.input.oracle), splits=splits,
    options=KlomOptions(**params["klom_options"]), n_resamples=resampling["n_resamples"],
    delete_fraction=resampling["delete_fraction"], base_seed=resampling["seed"],
    scheme=resampling["interval"],
)
# Every row of a worst-case forget set says it is a proxy (as klom.parquet's).
table = with_forget_set_kinds(table, config["forget_sets"])
save_parquet(snakemake.output.intervals, table, provenance(config))
log(f"{snakemake.wildcards.forget_set}/{method}: selected {table['config_id'].iloc[0]} of "
    f"{len(candidates)} settings by {table['selected_by'].iloc[0]}; "
    f"{resampling['n_resamples']} {resampling['interval']} resamples")
