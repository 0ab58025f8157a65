from workflow_job import script_context

import pandas as pd

from klomflow.io import load_array, load_logit_groups, save_parquet, write_text
from klomflow.jobs.provenance import provenance
from klomflow.reporting import corrective

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
forget_sets = {
    name: (config["forget_sets"][name], load_array(path))
    for name, path in zip(snakemake.params.forget_sets, snakemake.input.forget_sets)
}
klom_entries = [
    (pd.read_parquet(path)["klom"].to_numpy(), entry)
    for path, entry in zip(snakemake.input.klom, snakemake.params.klom_entries)
]
logits_of = load_logit_groups(snakemake.params.logit_groups)
logit_entries = [(logits_of(key), entry) for key, entry in snakemake.params.logit_entries]
klom, per_model = corrective.corrective_tables(
    points,
    config["manipulations"],
    forget_sets,
    klom_entries,
    logit_entries,
    snakemake.params.n_oracles,
)
accuracy = corrective.accuracy_summary(per_model)
table = corrective.headline(klom, accuracy)
save_parquet(snakemake.output.klom, klom, provenance(config))
save_parquet(snakemake.output.accuracy, per_model, provenance(config))
save_parquet(snakemake.output.table, table, provenance(config))
write_text(snakemake.output.markdown, corrective.markdown(table))
write_text(snakemake.output.latex, corrective.latex(table))
log(f"{len(klom)} KLOM rows, {len(per_model)} model rows, {len(table)} table rows")
