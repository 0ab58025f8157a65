from workflow_job import script_context

from klomflow.io import read_parquet_metadata, save_array, save_torch
from klomflow.jobs.runs import finish_resume, train_shard
from klomflow.training.datamodels import masks_from_records

log, config = script_context(snakemake)
checkpoint, logits = train_shard(
    config,
    "subset",
    int(snakemake.wildcards.shard),
    resume_dir=snakemake.params.resume_dir,
    log=log,
)
n_train = read_parquet_metadata(snakemake.input.points)["n_train"]
masks = masks_from_records(checkpoint["models"], n_train)  # [n_models_in_shard, n_train]
save_torch(snakemake.output.checkpoint, checkpoint)
save_array(snakemake.output.logits, logits)
save_array(snakemake.output.masks, masks)
finish_resume(snakemake.params.resume_dir)
log(f"wrote {len(checkpoint['models'])} subset models to {snakemake.output.checkpoint}")
