# Paper tables: each method's setting selected on the held-out oracles, intervals
# from resampling models, class accuracies, and the Markdown/LaTeX tables
# (klomflow/reporting/selection.py). `snakemake --cores all paper_tables` builds only these.


# The input and params functions of the rules below.
include: "functions/paper.smk"


rule resample_klom:
    input:
        unpack(interval_inputs),
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        intervals="results/intervals/{forget_set}/{method}.parquet",
    log:
        "results/logs/resample_klom/{forget_set}/{method}.log",
    # The noise floor's file has its own rule (the global constraint looks at `/`).
    wildcard_constraints:
        method=rf"(?!{NOISE_FLOOR}\.parquet$)[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../envs/klomflow.yaml"
    params:
        resampling=interval_params,
    script:
        "../workflow_scripts/resample_klom.py"


# The noise-floor row: the held-out oracles in the place of the unlearned models.
rule resample_noise_floor:
    input:
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        scored=[rules.compute_noise_floor.output.klom],
        unlearned=[rules.gather_oracle_margins.output.holdout],
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        intervals=f"results/intervals/{{forget_set}}/{NOISE_FLOOR}.parquet",
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
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        points=rules.prepare_data.output.points,
        original=rules.gather_original_margins.output.margins,
        oracle=expand(
            rules.gather_oracle_margins.output.scored, forget_set=class_forget_sets()
        ),
        unlearned=setting_outputs(
            rules.gather_unlearned_margins.output.margins, class_forget_sets()
        ),
        runs=setting_outputs(
            rules.gather_unlearned_margins.output.runs, class_forget_sets()
        ),
        # Logits: accuracy is top-1 (klomflow/reporting/tables.py).
        logits=accuracy_logit_files(class_forget_sets()),
    output:
        table="results/tables/class_accuracy.parquet",
    log:
        "results/logs/tabulate_class_accuracy.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        logit_groups=accuracy_logit_groups(class_forget_sets()),
        labels={f: config["forget_sets"][f]["label"] for f in class_forget_sets()},
    script:
        "../workflow_scripts/tabulate_class_accuracy.py"


# Retraining time per forget set (the oracles'), for KLOM against unlearning cost.
rule tabulate_training_seconds:
    input:
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
        original=original_checkpoints(),
        oracle=oracle_checkpoints(),
    output:
        table="results/tables/training_seconds.parquet",
    log:
        "results/logs/tabulate_training_seconds.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/tabulate_training_seconds.py"


rule make_paper_tables:
    input:
        # The published files' digests (models.source), for the provenance.
        manifest=source_manifest,
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
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/make_paper_tables.py"


# `snakemake --cores all paper_tables`: the paper tables and what they need, nothing else.
rule paper_tables:
    input:
        rules.make_paper_tables.output,
        # With identified forget sets: the corrective tables (rules/corrective.smk).
        corrective_outputs(),
    localrule: True
