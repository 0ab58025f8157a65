# Input and params functions of rules/datamodels.smk.
import klomflow.training.datamodels


def subset_training_params(wildcards):
    fraction = {"subset_fraction": config["datamodels"]["subset_fraction"]}
    return training_params(wildcards, "subset") | fraction


def subset_logit_shards(wildcards):
    return expand(
        rules.train_subset_models.output.logits, shard=range(n_shards("subset"))
    )


def subset_mask_shards(wildcards):
    return expand(
        rules.train_subset_models.output.masks, shard=range(n_shards("subset"))
    )


def datamodel_fit_params(wildcards):
    """What defines the fitted datamodels besides their inputs (rerun trigger)."""
    return {
        "ridge": config["datamodels"]["ridge"],
        "datamodels_version": klomflow.training.datamodels.VERSION,
    }


def datamodel_rows_params(wildcards):
    """The code version of the rows (rerun trigger); the fit's own params are its input's."""
    return {"datamodels_version": klomflow.training.datamodels.VERSION}
