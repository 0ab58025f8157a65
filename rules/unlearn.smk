# Unlearning: one method setting applied to a shard of original models.


# The input and params functions of the rules below.
include: "functions/unlearn.smk"


rule unlearn:
    input:
        # Inputs only some methods need (Method.needs), e.g. held-out oracle logits.
        unpack(method_extra_inputs),
        checkpoint=ORIGINAL_CHECKPOINT,
        forget_set=rules.make_forget_set.output.indices,
    output:
        **(
            UNLEARNED_CHECKPOINT
            if config["models"]["save_unlearned_checkpoints"]
            else {}
        ),
        logits="results/logits/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.npy",
        runs="results/runs/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.parquet",
    log:
        "results/logs/unlearn/{forget_set}/{method}/{config_id}/shard_{shard}.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        unlearning=unlearning_params,
        setting=job_setting,
    script:
        "../workflow_scripts/unlearn.py"


# do_nothing on published originals reads their published margins (no job, no GPU).
rule gather_unlearned_margins:
    input:
        unpack(do_nothing_inputs),
        logits=unlearned_logit_shards,
        runs=unlearned_run_shards,
        points=rules.prepare_data.output.points,
    output:
        margins="results/margins/unlearned/{forget_set}/{method}/{config_id}.npy",
        runs="results/runs/unlearned/{forget_set}/{method}/{config_id}.parquet",
    log:
        "results/logs/gather_unlearned_margins/{forget_set}/{method}/{config_id}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/gather_margins.py"
