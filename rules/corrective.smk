# Corrective unlearning (docs/corrective.md): the manipulated sets' sidecars, KLOM against
# the gold standard (oracles retrained without all of S_m), and the corrective tables.


# The input and params functions of the rules below.
include: "functions/corrective.smk"


# S_m of each manipulation, with a sidecar like the forget sets'.
rule record_manipulation:
    input:
        points=rules.prepare_data.output.points,
    output:
        indices="results/manipulations/{manipulation}.npy",
        sidecar="results/manipulations/{manipulation}.json",
    log:
        "results/logs/record_manipulation/{manipulation}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        spec=manipulation_spec,
    script:
        "../workflow_scripts/record_manipulation.py"


# A method setting on an identified set against reference B (the gold standard's oracles).
rule compute_corrective_klom:
    input:
        unlearned=rules.gather_unlearned_margins.output.margins,
        oracle=gold_standard_margins,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom="results/klom_corrective/{forget_set}/{method}/{config_id}.parquet",
    log:
        "results/logs/compute_corrective_klom/{forget_set}/{method}/{config_id}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom=corrective_klom_params,
    script:
        "../workflow_scripts/compute_klom.py"


# "Retrain without S_f": the set's held-out oracles (reference A) against reference B.
rule compute_retrain_klom:
    input:
        unlearned=rules.gather_oracle_margins.output.holdout,
        oracle=gold_standard_margins,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom="results/klom_corrective/{forget_set}/retrain_without_forget_set.parquet",
    log:
        "results/logs/compute_retrain_klom/{forget_set}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom=retrain_klom_params,
    script:
        "../workflow_scripts/compute_klom.py"


rule tabulate_corrective:
    input:
        points=rules.prepare_data.output.points,
        forget_sets=expand(rules.make_forget_set.output.indices, forget_set=IDENTIFIED),
        klom=[path for path, _ in corrective_klom_entries()],
        # Logits: the top-1 metrics (klomflow/reporting/corrective.py).
        logits=corrective_logit_files(),
    output:
        klom="results/tables/corrective_klom.parquet",
        accuracy="results/tables/corrective_accuracy.parquet",
        table="results/tables/paper_corrective.parquet",
        markdown="results/tables/paper_corrective.md",
        latex="results/tables/paper_corrective.tex",
    log:
        "results/logs/tabulate_corrective.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom_entries=[entry for _, entry in corrective_klom_entries()],
        logit_entries=[(key, entry) for key, _, entry in corrective_logit_entries()],
        logit_groups=corrective_logit_groups(),
        forget_sets=IDENTIFIED,
        n_oracles=config["models"]["n_oracles"],
    script:
        "../workflow_scripts/tabulate_corrective.py"


rule plot_corrective:
    input:
        table=rules.tabulate_corrective.output.table,
    output:
        figure=report(
            "results/report/corrective/corrective.png",
            caption="../report/corrective.rst",
            category="corrective",
            labels={"figure": "metric against the identified fraction"},
        ),
    log:
        "results/logs/plot_corrective.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/plot_corrective.py"
