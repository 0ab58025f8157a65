from pathlib import Path

import pandas as pd

from klomflow.io import read_parquet_metadata, save_parquet
from klomflow.logs import script_context
from klomflow.paper import provenance
from klomflow.tables import klom_table, summary_markdown

log, config = script_context(snakemake)
table = klom_table(
    (pd.read_parquet(path), read_parquet_metadata(path)) for path in snakemake.input.klom
)
save_parquet(snakemake.output.table, table, provenance(config))
Path(snakemake.output.summary).write_text(summary_markdown(table))
log(f"{len(table)} rows from {len(snakemake.input.klom)} KLOM files")
