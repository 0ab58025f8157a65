import numpy as np

from klomflow.config import MethodSetting
from klomflow.io import load_array, load_torch, save_array, save_parquet, save_torch
from klomflow.logs import script_context
from klomflow.runs import unlearn_shard

log, config = script_context(snakemake)
wildcards = snakemake.wildcards
setting = MethodSetting(
    entry=wildcards.method,
    method=snakemake.params.unlearning["method"],
    params=snakemake.params.unlearning["params"],
    config_id=wildcards.config_id,
    forget_sets=(wildcards.forget_set,),
)
logits, runs, states = unlearn_shard(
    config,
    setting,
    wildcards.forget_set,
    load_array(snakemake.input.forget_set),
    load_torch(snakemake.input.checkpoint),
    log=log,
    # Memory-mapped: methods read only the rows they need (datamodels are large).
    extras={name: np.load(path, mmap_mode="r") for name, path in snakemake.input.items()
            if name not in ("checkpoint", "forget_set")},
)
runs.insert(0, "forget_set", wildcards.forget_set)
runs.insert(1, "method", wildcards.method)
runs.insert(2, "config_id", wildcards.config_id)
if config["models"]["save_unlearned_checkpoints"]:
    save_torch(snakemake.params.checkpoint_path, {"setting": vars(setting), "models": states})
save_array(snakemake.output.logits, logits)
save_parquet(snakemake.output.runs, runs)
