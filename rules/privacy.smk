# Privacy-attack metrics from the margins already computed (klomflow/metrics/privacy/): per point
# for every method setting and for the held-out oracles (the reference row), then
# results/tables/privacy.parquet, the paper privacy table and one report figure per forget
# set. Nothing here runs unless `privacy.metrics` lists a metric.


# The input and params functions of the rules below.
include: "functions/privacy.smk"


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
