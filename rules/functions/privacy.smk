# Input and params functions of rules/privacy.smk (klomflow/metrics/privacy/).
from klomflow.metrics import privacy as privacy_module


def privacy_enabled():
    return bool(config["privacy"]["metrics"])


def privacy_params(wildcards):
    """What defines a per-point privacy file besides its inputs (rerun trigger)."""
    return {
        "identity": klom_params(wildcards)["identity"],
        "options": config["privacy"],
        "privacy_version": privacy_module.VERSION,
        # The scored oracles are the first n_oracles rows of the oracle logit shards.
        "n_scored": config["models"]["n_oracles"],
    }


def privacy_oracle_logits(wildcards):
    """The oracles' logit shards; none for published oracles (margin-based accuracy)."""
    if wildcards.forget_set in IMPORTED_ORACLES:
        return []
    return oracle_logit_shards(wildcards)


def privacy_files(wildcards=None):
    reference = expand(
        rules.compute_privacy_reference.output.points, forget_set=FORGET_SETS
    )
    return reference + setting_outputs(rules.compute_privacy.output.points)


def privacy_outputs():
    """The privacy tables and figures, for the `all` target (none when disabled)."""
    if not privacy_enabled():
        return []
    tables = [rules.reduce_privacy.output.table, *rules.make_privacy_tables.output]
    figures = expand(
        "results/report/{forget_set}/privacy_vs_klom.png", forget_set=FORGET_SETS
    )
    return tables + figures
