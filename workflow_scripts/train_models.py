from workflow_job import script_context

from klomflow.io import load_array, save_array, save_torch
from klomflow.jobs.runs import finish_resume, train_shard

log, config = script_context(snakemake)
forget_set = snakemake.wildcards.get("forget_set")
role = "oracle" if forget_set else "original"
checkpoint, logits = train_shard(
    config,
    role,
    int(snakemake.wildcards.shard),
    resume_dir=snakemake.params.resume_dir,
    forget_set=forget_set,
    forget_indices=load_array(snakemake.input.forget_set) if forget_set else None,
    log=log,
)
save_torch(snakemake.output.checkpoint, checkpoint)
save_array(snakemake.output.logits, logits)
finish_resume(snakemake.params.resume_dir)
log(f"wrote {len(checkpoint['models'])} models to {snakemake.output.checkpoint}")
