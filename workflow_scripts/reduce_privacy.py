from workflow_job import script_context

from klomflow.io import read_parquet_metadata, save_parquet
from klomflow.jobs.provenance import provenance
from klomflow.reporting.privacy_tables import privacy_table

log, config = script_context(snakemake)
table = privacy_table((read_parquet_metadata(path) for path in snakemake.input.privacy),
                      config["forget_sets"])
save_parquet(snakemake.output.table, table, provenance(config))
log(f"{len(table)} rows from {len(snakemake.input.privacy)} privacy files")
