from workflow_job import script_context

from klomflow.training.datamodel_files import fit_datamodels_to_files

log, config = script_context(snakemake)
ridge = snakemake.params.fit["ridge"]
# Shards are listed in seed order; row m of the masks goes with row m of the logits.
plan = fit_datamodels_to_files(
    snakemake.input.logits,
    snakemake.input.masks,
    ridge,
    snakemake.output.coefficients,
    snakemake.output.intercept,
)
log(
    f"datamodels from {len(snakemake.input.masks)} subset-model shards (ridge {ridge}), "
    f"{plan.block_columns} columns per block, planned peak {plan.peak_bytes / 2**30:.2f} GiB"
)
