# Input and params functions of rules/forget_sets.smk (klomflow/forget_sets/kinds.py).
import re

from snakemake.exceptions import WorkflowError

import klomflow.config
import klomflow.forget_sets.kinds
import klomflow.versions

# Static kinds are made from the labels by a local rule; derived kinds by a job
# that reads trained models. One output pattern, told apart by the set's name.
DERIVED_FORGET_SETS = [
    f
    for f in FORGET_SETS
    if config["forget_sets"][f]["kind"] in klomflow.forget_sets.kinds.DERIVED_KINDS
]


def names_pattern(names):
    """A regex matching exactly `names` (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def forget_set_spec(wildcards):
    if wildcards.forget_set not in config["forget_sets"]:
        raise WorkflowError(
            f"forget set {wildcards.forget_set!r} is not in {CONFIG_FILES}"
        )
    return config["forget_sets"][wildcards.forget_set]


def published_forget_set_file(wildcards):
    spec = forget_set_spec(wildcards)
    if spec["kind"] != "published":
        return {}
    return {"published": str(SOURCE.forget_set_file(spec["id"]))}


def derived_forget_set_inputs(wildcards):
    """The files a derived forget set is computed from: Snakemake makes them first
    and remakes the set (and its oracles) when they change."""
    spec = forget_set_spec(wildcards)
    needed = klomflow.forget_sets.kinds.inputs_needed(spec)
    inputs = {}
    if "margin_datamodel" in needed:
        inputs["margin_datamodel"] = "results/datamodels/margin_train.npy"
    if "subset_models" in needed:
        inputs["subset_logits"] = subset_logit_shards(wildcards)
        inputs["subset_masks"] = subset_mask_shards(wildcards)
    if "originals" in needed:
        inputs["originals"] = original_checkpoints_of(range(spec["models"]))
    if "embedding_file" in needed:
        inputs["embedding"] = str(klomflow.forget_sets.kinds.spec_path(spec))
    return inputs


def original_checkpoints_of(models):
    """The originals' checkpoint shards that hold `models` (trained or imported)."""
    per_job = klomflow.config.seeds_per_job(config, "original")
    shards = sorted({k // per_job for k in models})
    return expand(ORIGINAL_CHECKPOINT, shard=shards)


def derived_forget_set_params(wildcards):
    """What defines a derived set besides its input files (rerun trigger)."""
    spec = forget_set_spec(wildcards)
    params = {"spec": spec, "version": klomflow.versions.FORGET_SETS}
    if spec["kind"] == "worst_case" and spec["proxy"] == "inout_klom":
        params["klom_options"] = config["klom"]
    if spec["kind"] == "worst_case" and spec["proxy"] == "bilevel":
        # The pilot model trains here with the run's recipe.
        params["training"] = {
            key: config[key] for key in ("dataset", "model", "train")
        } | {
            "base_seed": config["models"]["base_seed"],
            "training_version": klomflow.versions.TRAINING,
        }
    return params
