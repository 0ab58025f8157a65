from workflow_job import script_context

import pandas as pd

from klomflow.reporting import figures
from klomflow.reporting.privacy_tables import privacy_figure

log, config = script_context(snakemake)
forget_set = snakemake.wildcards.forget_set
frame = pd.read_parquet(snakemake.input.table)
figures.save(privacy_figure(frame, forget_set), snakemake.output.figure)
log(f"{forget_set}: KLOM against U-LiRA AUC and forgetting quality")
