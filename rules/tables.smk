# The reductions: KLOM and accuracy tables over every forget set and method setting.


# The input and params functions of the rules below.
include: "functions/tables.smk"


rule reduce_klom:
    input:
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        # Per-point KLOM against the scored and against the held-out oracles.
        klom=klom_files() + holdout_klom_files(),
        # Per model, how many weights the method changed (a setting that changed none is flagged).
        runs=unlearned_run_files(),
    output:
        table="results/tables/klom.parquet",
        summary="results/tables/klom_summary.md",
    log:
        "results/logs/reduce_klom.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/reduce_klom.py"


rule tabulate_accuracy:
    input:
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        points=rules.prepare_data.output.points,
        original=rules.gather_original_margins.output.margins,
        # Sorted, as the forget_sets param that names them: not in the config's order, which
        # would show in the param (a rerun trigger).
        oracle=expand(
            rules.gather_oracle_margins.output.scored, forget_set=sorted(FORGET_SETS)
        ),
        forget_sets=expand(
            rules.make_forget_set.output.indices, forget_set=sorted(FORGET_SETS)
        ),
        unlearned=unlearned_margin_files(),
        runs=unlearned_run_files(),
        # Logits: accuracy is top-1 (klomflow/reporting/tables.py).
        logits=accuracy_logit_files(FORGET_SETS),
    output:
        table="results/tables/accuracy.parquet",
    log:
        "results/logs/tabulate_accuracy.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        logit_groups=accuracy_logit_groups(FORGET_SETS),
        # The names of the forget-set and oracle inputs, in their order.
        forget_sets=sorted(FORGET_SETS),
        identity={
            "dataset": config["dataset"]["name"],
            "model": config["model"]["name"],
        },
    script:
        "../workflow_scripts/tabulate_accuracy.py"
