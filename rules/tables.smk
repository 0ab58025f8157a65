# The reductions: KLOM and accuracy tables over every forget set and method setting.


rule reduce_klom:
    input:
        # Per-point KLOM against the scored and against the held-out oracles.
        klom=klom_files() + holdout_klom_files(),
    output:
        table="results/tables/klom.parquet",
        summary="results/tables/klom_summary.md",
    log:
        "results/logs/reduce_klom.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/reduce_klom.py"


rule tabulate_accuracy:
    input:
        points=rules.prepare_data.output.points,
        # Logits, not margins: accuracy is top-1 (klomflow/tables.py).
        original=original_logit_shards(None),
        oracle=oracle_logit_files(FORGET_SETS),
        forget_sets=expand(rules.make_forget_set.output.indices, forget_set=FORGET_SETS),
        unlearned=unlearned_logit_files(),
        runs=unlearned_run_files(),
    output:
        table="results/tables/accuracy.parquet",
    log:
        "results/logs/tabulate_accuracy.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        identity={
            "dataset": config["dataset"]["name"],
            "model": config["model"]["name"],
        },
        n_oracles=config["models"]["n_oracles"],
    script:
        "../workflow_scripts/tabulate_accuracy.py"
