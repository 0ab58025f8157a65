# Input and params functions of rules/paper.smk (klomflow/reporting/selection.py).
from snakemake.exceptions import WorkflowError

import klomflow.reporting.selection
from klomflow.metrics import klom as klom_module
from klomflow.reporting.names import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID


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
    entry_settings(
        wildcards
    )  # an error naming the pair if the entry does not run there
    outputs = {
        "scored": rules.compute_klom.output.klom,
        "holdout": rules.compute_klom.output.holdout,
        "unlearned": rules.gather_unlearned_margins.output.margins,
    }
    return {
        name: setting_outputs(pattern, [wildcards.forget_set], wildcards.method)
        for name, pattern in outputs.items()
    }


def interval_params(wildcards):
    """What defines an interval file (rerun trigger)."""
    if wildcards.get("method", NOISE_FLOOR) == NOISE_FLOOR:
        config_ids, diagnostic = [NOISE_FLOOR_CONFIG_ID], False
    else:
        settings = entry_settings(wildcards)
        config_ids = [s.config_id for s in settings]
        diagnostic = METHOD_SPECS[settings[0].implementation].diagnostic
    return {
        "config_ids": config_ids,
        "diagnostic": diagnostic,
        "klom_options": config["klom"],
        "resampling": {
            "n_resamples": config["paper"]["resamples"],
            "delete_fraction": config["paper"]["delete_fraction"],
            "interval": config["paper"]["interval"],
            "seed": config["paper"]["resample_seed"],
        },
        "klom_version": klom_module.VERSION,
        "paper_version": klomflow.reporting.selection.VERSION,
    }


def interval_files(wildcards=None):
    entries = expand(
        rules.resample_noise_floor.output.intervals, forget_set=FORGET_SETS
    )
    pairs = sorted({(f, s.entry) for s in SETTINGS for f in s.forget_sets})
    return entries + [
        rules.resample_klom.output.intervals.format(
            forget_set=forget_set, method=method
        )
        for forget_set, method in pairs
    ]


def class_forget_sets():
    """Sorted, not in the config's order: the class-accuracy rule's params list them."""
    return sorted(f for f in FORGET_SETS if config["forget_sets"][f]["kind"] == "class")


def oracle_checkpoints(wildcards=None):
    """Checkpoints of the oracles trained here (not of published ones)."""
    return expand(
        rules.train_oracles.output.checkpoint,
        forget_set=TRAINED_ORACLES,
        shard=range(n_shards("oracle")),
    )


def original_checkpoints(wildcards=None):
    """Checkpoints of the originals trained here (none when they are published)."""
    if SOURCE is not None:
        return []
    return expand(ORIGINAL_CHECKPOINT, shard=range(n_shards("original")))
