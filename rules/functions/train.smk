# Input and params functions of rules/train.smk.
import klomflow.config
import klomflow.jobs.published
import klomflow.versions


def training_params(wildcards, role):
    """What defines a trained shard; a change here retrains it (rerun trigger)."""
    models = config["models"]
    indices = klomflow.config.shard_indices(config, role, int(wildcards.shard))
    return manipulation_params() | {
        "dataset": config["dataset"],
        "model": config["model"],
        "train": config["train"],
        "base_seed": models["base_seed"],
        "models": [indices.start, indices.stop],
        "training_version": klomflow.versions.TRAINING,
    }


def original_training_params(wildcards):
    return training_params(wildcards, "original")


def oracle_training_params(wildcards):
    return training_params(wildcards, "oracle")


def original_logit_shards(wildcards):
    return expand(
        rules.train_originals.output.logits, shard=range(n_shards("original"))
    )


def oracle_logit_shards(wildcards):
    return expand(
        rules.train_oracles.output.logits,
        forget_set=wildcards.forget_set,
        shard=range(n_shards("oracle")),
    )


# Published sources (models.source; klomflow/data/published/): the files the originals
# and the imported oracles are read from.


def published_original_files():
    """The originals' published margin files, and the logit files their labels are checked on."""
    n_models = config["models"]["n_originals"]
    margins = SOURCE.original_files(n_models, "margins")
    logits = SOURCE.original_files(n_models, "logits")
    files = [str(path) for paths in margins.values() for path in paths]
    if margins != logits:
        files += existing(path for paths in logits.values() for path in paths)
    return files


def published_oracle_files(forget_set, kind="margins"):
    spec = config["forget_sets"][forget_set]
    n_models = config["models"]["n_oracles"] + config["models"]["n_holdout_oracles"]
    files = SOURCE.oracle_files(spec["id"], n_models, kind)
    listed = [str(path) for paths in files.values() for path in paths]
    listed.append(str(SOURCE.forget_set_file(spec["id"])))
    if SOURCE.layout == "easydub":  # settles the order of the forget files
        listed += existing([SOURCE.original_forget_file(spec["id"])])
    return listed


def original_margin_inputs(wildcards):
    """Trained originals' logit shards, or the published folder's files."""
    if SOURCE is None:
        return {"logits": original_logit_shards(wildcards)}
    return {"published": published_original_files()}


def oracle_margin_inputs(wildcards):
    if wildcards.forget_set not in IMPORTED_ORACLES:
        return {"logits": oracle_logit_shards(wildcards)}
    return {
        "published": published_oracle_files(wildcards.forget_set),
        "original": rules.gather_original_margins.output.margins,
    }


def holdout_oracle_logit_inputs(wildcards):
    if wildcards.forget_set not in IMPORTED_ORACLES:
        return {"logits": oracle_logit_shards(wildcards)}
    return {"published": published_oracle_files(wildcards.forget_set, "logits")}


def original_shard_models(wildcards):
    """Model ids of an originals' shard."""
    return list(klomflow.config.shard_indices(config, "original", int(wildcards.shard)))


def published_checkpoints(wildcards):
    return [
        str(SOURCE.original_checkpoint(k)) for k in original_shard_models(wildcards)
    ]


def needs_checkpoints():
    """Unlearning jobs run (they start from the originals' checkpoints)."""
    return any(not reuses_original_margins(s) for s in SETTINGS)


def published_source_files(wildcards=None):
    files = published_original_files()
    for forget_set in IMPORTED_ORACLES:
        files += published_oracle_files(forget_set)
    if needs_checkpoints():
        files += [
            str(SOURCE.original_checkpoint(k))
            for k in range(config["models"]["n_originals"])
        ]
    return sorted(set(files))


def source_manifest(wildcards=None):
    """The published files' digests, which every table's provenance holds; none when training."""
    return [] if SOURCE is None else [klomflow.jobs.published.MANIFEST_PATH]
