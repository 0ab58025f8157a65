from workflow_job import script_context

import pandas as pd

from klomflow.io import save_parquet, write_text
from klomflow.jobs.provenance import provenance
from klomflow.reporting.privacy_tables import paper_privacy_frame, privacy_latex, privacy_markdown

log, config = script_context(snakemake)
frame = paper_privacy_frame(pd.read_parquet(snakemake.input.privacy),
                            pd.read_parquet(snakemake.input.klom))
save_parquet(snakemake.output.table, frame, provenance(config))
write_text(snakemake.output.markdown, privacy_markdown(frame))
write_text(snakemake.output.latex, privacy_latex(frame))
log(f"paper privacy table: {frame['method'].nunique()} rows over "
    f"{frame['forget_set'].nunique()} forget sets")
