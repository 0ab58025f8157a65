from workflow_job import script_context

import numpy as np

from klomflow.io import load_array, load_torch, save_array, save_parquet, save_torch
from klomflow.jobs.runs import unlearn_shard

log, config = script_context(snakemake)
setting = snakemake.params.setting  # the MethodSetting, on this job's forget set only
forget_set = snakemake.wildcards.forget_set
logits, runs, states = unlearn_shard(
    config,
    setting,
    forget_set,
    load_array(snakemake.input.forget_set),
    load_torch(snakemake.input.checkpoint),
    log=log,
    # Memory-mapped: methods read only the rows they need (datamodels are large).
    extras={name: np.load(path, mmap_mode="r") for name, path in snakemake.input.items()
            if name not in ("checkpoint", "forget_set")},
)
runs.insert(0, "forget_set", forget_set)
runs.insert(1, "method", setting.entry)
runs.insert(2, "config_id", setting.config_id)
if "checkpoint" in snakemake.output.keys():  # models.save_unlearned_checkpoints
    save_torch(snakemake.output.checkpoint, {"setting": vars(setting), "models": states})
save_array(snakemake.output.logits, logits)
save_parquet(snakemake.output.runs, runs)
