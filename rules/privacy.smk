# Privacy-attack metrics from the margins already computed (klomflow/privacy.py): per point
# for every method setting and for the held-out oracles (the reference row), then
# results/tables/privacy.parquet, the paper privacy table and one report figure per forget
# set. Nothing here runs unless `privacy.metrics` lists a metric.
from klomflow import privacy as privacy_module


def privacy_enabled():
    return bool(config["privacy"]["metrics"])


def privacy_params(wildcards):
    """What defines a per-point privacy file besides its inputs (rerun trigger)."""
    return {
        "identity": klom_params(wildcards)["identity"],
        "options": config["privacy"],
        "privacy_version": privacy_module.VERSION,
        # The scored oracles are the first n_oracles rows of the oracle logit shards.
        "n_scored": config["models"]["n_oracles"],
    }


def privacy_oracle_logits(wildcards):
    """The oracles' logit shards; none for published oracles (margin-based accuracy)."""
    if wildcards.forget_set in IMPORTED_ORACLES:
        return []
    return oracle_logit_shards(wildcards)


def privacy_files(wildcards=None):
    reference = expand(
        "results/privacy/{forget_set}/oracle_holdout/reference.parquet",
        forget_set=FORGET_SETS,
    )
    return reference + setting_outputs(
        "results/privacy/{forget_set}/{method}/{config_id}.parquet"
    )


def privacy_outputs():
    """The privacy tables and figures, for the `all` target (none when disabled)."""
    if not privacy_enabled():
        return []
    tables = expand(
        "results/tables/{name}", name=["privacy.parquet", "paper_privacy.md"]
    ) + expand("results/tables/paper_privacy.{extension}", extension=["tex", "parquet"])
    figures = expand(
        "results/report/{forget_set}/privacy_vs_klom.png", forget_set=FORGET_SETS
    )
    return tables + figures


rule compute_privacy:
    input:
        tested=rules.gather_unlearned_margins.output.margins,
        tested_logits=unlearned_logit_shards,
        oracle=rules.gather_oracle_margins.output.scored,
        oracle_logits=privacy_oracle_logits,
        original=rules.gather_original_margins.output.margins,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        points="results/privacy/{forget_set}/{method}/{config_id}.parquet",
    log:
        "results/logs/compute_privacy/{forget_set}/{method}/{config_id}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        privacy=privacy_params,
    script:
        "../workflow_scripts/compute_privacy.py"


# The reference row: the held-out oracles (a perfect unlearner) in place of a method.
rule compute_privacy_reference:
    input:
        tested=rules.gather_oracle_margins.output.holdout,
        tested_logits=privacy_oracle_logits,
        oracle=rules.gather_oracle_margins.output.scored,
        oracle_logits=privacy_oracle_logits,
        original=rules.gather_original_margins.output.margins,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        points="results/privacy/{forget_set}/oracle_holdout/reference.parquet",
    log:
        "results/logs/compute_privacy_reference/{forget_set}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        privacy=privacy_params,
    script:
        "../workflow_scripts/compute_privacy.py"


rule reduce_privacy:
    input:
        privacy=privacy_files(),
    output:
        table="results/tables/privacy.parquet",
    log:
        "results/logs/reduce_privacy.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/reduce_privacy.py"


# Next to KLOM, for the settings the KLOM tables selected (on held-out KLOM, never on these).
rule make_privacy_tables:
    input:
        privacy=rules.reduce_privacy.output.table,
        klom=rules.reduce_klom.output.table,
    output:
        markdown="results/tables/paper_privacy.md",
        latex="results/tables/paper_privacy.tex",
        table="results/tables/paper_privacy.parquet",
    log:
        "results/logs/make_privacy_tables.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/make_privacy_tables.py"


rule plot_privacy:
    input:
        table=rules.make_privacy_tables.output.table,
    output:
        figure=figure_output("privacy_vs_klom", "KLOM against the privacy attacks"),
    log:
        "results/logs/plot_privacy/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/plot_privacy.py"
