from workflow_job import script_context

import sys

import pandas as pd

from klomflow.config import method_specs
from klomflow.io import read_parquet_metadata, save_parquet, write_text
from klomflow.jobs.provenance import provenance
from klomflow.jobs.published import easydub_check_report
from klomflow.reporting.summary import summary_markdown
from klomflow.reporting.tables import klom_table, with_forget_set_kinds, with_unchanged_weights

log, config = script_context(snakemake)
specs = method_specs(config)  # the built-ins and the config's user methods
table = klom_table(
    (pd.read_parquet(path), read_parquet_metadata(path)) for path in snakemake.input.klom
)
table = with_forget_set_kinds(table, config["forget_sets"])
# Settings that left models as they were: logged by each unlearning job, flagged in the tables.
table = with_unchanged_weights(
    table, [pd.read_parquet(path) for path in snakemake.input.runs], specs
)
save_parquet(snakemake.output.table, table, provenance(config))
write_text(snakemake.output.summary, summary_markdown(table, specs))
log(f"{len(table)} rows from {len(snakemake.input.klom)} KLOM files")
# EasyDUB's check (config/easydub_check.yaml): the result beside both published figures.
if check := easydub_check_report(table, config):
    log(check)
    print(check, file=sys.stderr)
