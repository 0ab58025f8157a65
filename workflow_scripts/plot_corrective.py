from workflow_job import script_context

import pandas as pd

from klomflow.reporting.corrective import figure

log, config = script_context(snakemake)
figure(pd.read_parquet(snakemake.input.table), snakemake.output.figure)
log(f"wrote {snakemake.output.figure}")
