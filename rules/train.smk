# Originals (full training set) and oracles (training set minus one forget set),
# a shard of seeds per job; then their margins, gathered in seed order.


# The input and params functions of the rules below.
include: "functions/train.smk"


rule train_oracles:
    input:
        forget_set=rules.make_forget_set.output.indices,
    output:
        checkpoint="results/models/oracle/{forget_set}/shard_{shard}.pt",
        logits="results/logits/oracle/{forget_set}/shard_{shard}.npy",
    log:
        "results/logs/train_oracles/{forget_set}/shard_{shard}.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        training=oracle_training_params,
        resume_dir="results/resume/oracle/{forget_set}/shard_{shard}",
    script:
        "../workflow_scripts/train_models.py"


# From the trained shards, or from a published folder (models.source).
rule gather_original_margins:
    input:
        unpack(original_margin_inputs),
        points=rules.prepare_data.output.points,
    output:
        margins="results/margins/original.npy",
    log:
        "results/logs/gather_original_margins.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/gather_margins.py"


if SOURCE is None:

    rule train_originals:
        output:
            checkpoint=ORIGINAL_CHECKPOINT,
            logits="results/logits/original/shard_{shard}.npy",
        log:
            "results/logs/train_originals/shard_{shard}.log",
        conda:
            "../envs/klomflow.yaml"
        threads: 1
        params:
            training=original_training_params,
            # Epoch checkpoints live outside the outputs so a failed job keeps them.
            resume_dir="results/resume/original/shard_{shard}",
        script:
            "../workflow_scripts/train_models.py"

else:

    # Published originals (models.source): their checkpoints in klomflow's format,
    # checked against their published margins; only unlearning jobs need them.
    rule import_originals:
        input:
            published=published_checkpoints,
            margins=rules.gather_original_margins.output.margins,
            points=rules.prepare_data.output.points,
        output:
            checkpoint=ORIGINAL_CHECKPOINT,
        log:
            "results/logs/import_originals/shard_{shard}.log",
        conda:
            "../envs/klomflow.yaml"
        params:
            models=original_shard_models,
            source=SOURCE.describe(),
        script:
            "../workflow_scripts/import_originals.py"


rule gather_oracle_margins:
    input:
        unpack(oracle_margin_inputs),
        points=rules.prepare_data.output.points,
    output:
        scored="results/margins/oracle/{forget_set}.npy",
        holdout=f"results/margins/{NOISE_FLOOR}/{{forget_set}}.npy",
    log:
        "results/logs/gather_oracle_margins/{forget_set}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        n_scored=config["models"]["n_oracles"],
    script:
        "../workflow_scripts/gather_margins.py"


# Held-out oracles' logits, for methods that fine-tune towards oracles
# (oracle_matching); never the scored oracles.
rule gather_holdout_oracle_logits:
    input:
        unpack(holdout_oracle_logit_inputs),
        points=rules.prepare_data.output.points,
    output:
        logits=f"results/logits/{NOISE_FLOOR}/{{forget_set}}.npy",
    log:
        "results/logs/gather_holdout_oracle_logits/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        n_scored=config["models"]["n_oracles"],
    script:
        "../workflow_scripts/gather_holdout_oracle_logits.py"


# The SHA-256 of every published file the run reads, for the tables' provenance.
rule record_published_source:
    input:
        published=published_source_files,
    output:
        manifest="results/source/manifest.json",
    log:
        "results/logs/record_published_source.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        source=SOURCE.describe() if SOURCE else {},
    script:
        "../workflow_scripts/record_published_source.py"
