# Paper tables: each method's setting selected on the held-out oracles, intervals
# from resampling models, class accuracies, and the Markdown/LaTeX tables
# (klomflow/paper.py). `snakemake --cores all paper_tables` builds only these.
import klomflow.paper


def entry_settings(wildcards):
    """The settings of method entry `method` that run on `forget_set`."""
    settings = [
        s
        for s in SETTINGS
        if s.entry == wildcards.method and wildcards.forget_set in s.forget_sets
    ]
    if not settings:
        raise WorkflowError(
            f"method {wildcards.method!r} does not run on forget set {wildcards.forget_set!r}"
        )
    return sorted(settings, key=lambda s: s.config_id)


def interval_inputs(wildcards):
    """Per setting of the entry: scored and held-out per-point KLOM, unlearned margins."""
    settings = entry_settings(wildcards)
    paths = {
        "scored": "results/klom/{forget_set}/{method}/{config_id}.parquet",
        "holdout": "results/klom_holdout/{forget_set}/{method}/{config_id}.parquet",
        "unlearned": "results/margins/unlearned/{forget_set}/{method}/{config_id}.npy",
    }
    return {
        name: [
            pattern.format(
                forget_set=wildcards.forget_set, method=s.entry, config_id=s.config_id
            )
            for s in settings
        ]
        for name, pattern in paths.items()
    }


def interval_params(wildcards):
    """What defines an interval file (rerun trigger)."""
    if wildcards.get("method", NOISE_FLOOR) == NOISE_FLOOR:
        config_ids, diagnostic = [NOISE_FLOOR_CONFIG_ID], False
    else:
        settings = entry_settings(wildcards)
        config_ids = [s.config_id for s in settings]
        diagnostic = METHODS[settings[0].method].diagnostic
    return {
        "config_ids": config_ids,
        "diagnostic": diagnostic,
        "klom_options": config["klom"],
        "resampling": {
            "n_resamples": config["paper"]["resamples"],
            "delete_fraction": config["paper"]["delete_fraction"],
            "seed": config["paper"]["resample_seed"],
        },
        "klom_version": klom_module.VERSION,
        "paper_version": klomflow.paper.VERSION,
    }


def interval_files(wildcards=None):
    entries = expand(
        "results/intervals/{forget_set}/{method}.parquet",
        forget_set=FORGET_SETS,
        method=NOISE_FLOOR,
    )
    pairs = sorted({(f, s.entry) for s in SETTINGS for f in s.forget_sets})
    return entries + [
        f"results/intervals/{forget_set}/{method}.parquet"
        for forget_set, method in pairs
    ]


def class_forget_sets():
    return [f for f in FORGET_SETS if config["forget_sets"][f]["kind"] == "class"]


def class_setting_files(pattern):
    return [
        pattern.format(forget_set=f, method=s.entry, config_id=s.config_id)
        for s in SETTINGS
        for f in s.forget_sets
        if f in class_forget_sets()
    ]


def oracle_checkpoints(wildcards=None):
    return expand(
        "results/models/oracle/{forget_set}/shard_{shard}.pt",
        forget_set=FORGET_SETS,
        shard=range(n_shards("oracle")),
    )


def original_checkpoints(wildcards=None):
    return expand(
        "results/models/original/shard_{shard}.pt", shard=range(n_shards("original"))
    )


def paper_table_files():
    return expand(
        "results/tables/paper_{table}.{extension}",
        table=["klom", "accuracy"],
        extension=["md", "tex", "parquet"],
    )


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
        original=rules.gather_original_margins.output.margins,
        oracle=expand(
            rules.gather_oracle_margins.output.scored, forget_set=class_forget_sets()
        ),
        unlearned=class_setting_files(
            "results/margins/unlearned/{forget_set}/{method}/{config_id}.npy"
        ),
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
