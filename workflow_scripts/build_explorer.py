from workflow_job import script_context

from pathlib import Path

from klomflow.io import write_text
from klomflow.metrics.klom import KlomOptions
from klomflow.options import ExplorerOptions
from klomflow.reporting.explorer_page import explorer_html

log, config = script_context(snakemake)
results = Path(snakemake.input.klom_table).parents[1]  # results/tables/klom.parquet
page = explorer_html(
    results,
    KlomOptions(**snakemake.params.klom_options),
    ExplorerOptions(**snakemake.params.explorer),
    dataset=snakemake.params.dataset,
    seed=snakemake.params.seed,
)
write_text(snakemake.output.page, page)
log(f"{snakemake.output.page}: {len(page.encode()) / 1e6:.1f} MB")
