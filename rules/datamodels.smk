# Datamodels: models trained on random subsets of the training set, a shard of
# seeds per job, then linear datamodels fitted to their logits (dmm, dm_direct).


# The input and params functions of the rules below.
include: "functions/datamodels.smk"


rule train_subset_models:
    input:
        points=rules.prepare_data.output.points,
    output:
        checkpoint="results/models/subset/shard_{shard}.pt",
        logits="results/logits/subset/shard_{shard}.npy",
        masks="results/datamodels/masks/shard_{shard}.npy",
    log:
        "results/logs/train_subset_models/shard_{shard}.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        training=subset_training_params,
        # Epoch checkpoints live outside the outputs so a failed job keeps them.
        resume_dir="results/resume/subset/shard_{shard}",
    script:
        "../workflow_scripts/train_subset_models.py"


rule fit_datamodels:
    input:
        logits=subset_logit_shards,
        masks=subset_mask_shards,
    output:
        # Dual coefficients (or the weights, with as many models as training points):
        # klomflow/training/datamodels.py, "Storage"; never the whole table beta.
        coefficients="results/datamodels/coefficients.npy",
        intercept="results/datamodels/intercept.npy",
    log:
        "results/logs/fit_datamodels.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        fit=datamodel_fit_params,
    script:
        "../workflow_scripts/fit_datamodels.py"


# A forget set's rows of the datamodels, beta[F] (what dmm and dm_direct read), from the
# stored fit: a forget set added later needs no refit.
rule compute_datamodel_rows:
    input:
        coefficients=rules.fit_datamodels.output.coefficients,
        masks=subset_mask_shards,
        forget_set=rules.make_forget_set.output.indices,
    output:
        rows="results/datamodels/rows/{forget_set}.npy",
    log:
        "results/logs/compute_datamodel_rows/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        version=datamodel_rows_params,
    script:
        "../workflow_scripts/compute_datamodel_rows.py"


# The margin datamodel: how each training point moves every training point's
# margin, fitted to the subset models (for datamodel_pc, worst_case proxies and
# nearest neighbours in datamodel space).
rule fit_margin_datamodel:
    input:
        logits=subset_logit_shards,
        masks=subset_mask_shards,
        points=rules.prepare_data.output.points,
    output:
        theta="results/datamodels/margin_train.npy",
    log:
        "results/logs/fit_margin_datamodel.log",
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        fit=datamodel_fit_params,
    script:
        "../workflow_scripts/fit_margin_datamodel.py"
