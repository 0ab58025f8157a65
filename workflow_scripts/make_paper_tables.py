from workflow_job import script_context

import pandas as pd

from klomflow.config import method_specs
from klomflow.io import save_parquet, write_text
from klomflow.jobs.provenance import provenance
from klomflow.reporting.render import accuracy_latex, accuracy_markdown, klom_latex, klom_markdown
from klomflow.reporting.selection import klom_table_frame
from klomflow.reporting.tables import accuracy_table_frame

log, config = script_context(snakemake)
klom = pd.read_parquet(snakemake.input.klom)
intervals = pd.concat([pd.read_parquet(path) for path in snakemake.input.intervals],
                      ignore_index=True)
frame = klom_table_frame(klom, intervals)
accuracy = accuracy_table_frame(pd.read_parquet(snakemake.input.class_accuracy), klom)
metadata = provenance(config)
specs = method_specs(config)  # the built-ins and the config's user methods
output = snakemake.output
save_parquet(output.klom_table, frame, metadata)
save_parquet(output.accuracy_table, accuracy, metadata)
write_text(output.klom_markdown, klom_markdown(frame, klom, specs))
write_text(output.klom_latex, klom_latex(frame, klom, specs))
write_text(output.accuracy_markdown, accuracy_markdown(accuracy, klom))
write_text(output.accuracy_latex, accuracy_latex(accuracy, klom))
log(f"paper tables: {frame['method'].nunique()} rows over {frame['forget_set'].nunique()} "
    f"forget sets; accuracy over {accuracy['forget_set'].nunique()} class forget sets")
