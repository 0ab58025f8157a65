from workflow_job import script_context

import pandas as pd

from klomflow.io import write_text
from klomflow.reporting.report_landing import results_html

log, config = script_context(snakemake)
paper = pd.read_parquet(snakemake.input.paper_table)
write_text(snakemake.output.table,
           results_html(paper, pd.read_parquet(snakemake.input.klom_table)))
log(f"{snakemake.output.table}: {paper['forget_set'].nunique()} forget sets, "
    f"{paper['method'].nunique()} rows")
