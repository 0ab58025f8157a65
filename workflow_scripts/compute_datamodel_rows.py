from workflow_job import script_context

from klomflow.io import load_array
from klomflow.training.datamodel_files import datamodel_rows_to_file

log, config = script_context(snakemake)
forget = load_array(snakemake.input.forget_set)
plan = datamodel_rows_to_file(
    snakemake.input.coefficients, snakemake.input.masks, forget, snakemake.output.rows
)
log(
    f"datamodel rows of {len(forget)} forget points, {plan.block_columns} columns per "
    f"block, planned peak {plan.peak_bytes / 2**30:.2f} GiB"
)
