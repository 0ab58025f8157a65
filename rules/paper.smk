# Paper tables: each method's setting selected on the held-out oracles, intervals
# from resampling models, class accuracies, and the Markdown/LaTeX tables
# (klomflow/paper.py). `snakemake --cores all paper_tables` builds only these.
rule resample_klom:
    input:
        unpack(interval_inputs),
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        intervals="results/intervals/{forget_set}/{method}.parquet",
    log:
        "results/logs/resample_klom/{forget_set}/{method}.log",
    # The noise floor's file has its own rule (the global constraint looks at `/`).
    wildcard_constraints:
        method=r"(?!oracle_holdout\.parquet$)[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../envs/klomflow.yaml"
    params:
        resampling=interval_params,
    script:
        "../workflow_scripts/resample_klom.py"


# The noise-floor row: the held-out oracles in the place of the unlearned models.
rule resample_noise_floor:
    input:
        scored=[rules.compute_noise_floor.output.klom],
        unlearned=[rules.gather_oracle_margins.output.holdout],
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        intervals="results/intervals/{forget_set}/oracle_holdout.parquet",
    log:
        "results/logs/resample_noise_floor/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        resampling=interval_params,
    script:
        "../workflow_scripts/resample_klom.py"


rule tabulate_class_accuracy:
    input:
        points=rules.prepare_data.output.points,
        # Logits: accuracy is top-1 (klomflow/tables.py).
        original=original_logit_shards(None),
        oracle=oracle_logit_files(class_forget_sets()),
        unlearned=unlearned_logit_files(class_forget_sets()),
        runs=class_setting_files(
            "results/runs/unlearned/{forget_set}/{method}/{config_id}.parquet"
        ),
    output:
        table="results/tables/class_accuracy.parquet",
    log:
        "results/logs/tabulate_class_accuracy.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        labels={f: config["forget_sets"][f]["label"] for f in class_forget_sets()},
        n_oracles=config["models"]["n_oracles"],
    script:
        "../workflow_scripts/tabulate_class_accuracy.py"


# Retraining time per forget set (the oracles'), for KLOM against unlearning cost.
rule tabulate_training_seconds:
    input:
        original=original_checkpoints(),
        oracle=oracle_checkpoints(),
    output:
        table="results/tables/training_seconds.parquet",
    log:
        "results/logs/tabulate_training_seconds.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/tabulate_training_seconds.py"


rule make_paper_tables:
    input:
        klom=rules.reduce_klom.output.table,
        intervals=interval_files(),
        class_accuracy=rules.tabulate_class_accuracy.output.table,
    output:
        klom_markdown="results/tables/paper_klom.md",
        klom_latex="results/tables/paper_klom.tex",
        klom_table="results/tables/paper_klom.parquet",
        accuracy_markdown="results/tables/paper_accuracy.md",
        accuracy_latex="results/tables/paper_accuracy.tex",
        accuracy_table="results/tables/paper_accuracy.parquet",
    log:
        "results/logs/make_paper_tables.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/make_paper_tables.py"


# `snakemake --cores all paper_tables`: the paper tables and what they need, nothing else.
rule paper_tables:
    input:
        paper_table_files(),
