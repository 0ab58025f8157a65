# Input and params functions of rules/explorer.smk.


def explorer_inputs(wildcards):
    """Every file the page reads besides the tables: per-point KLOM, margins, forget sets,
    the privacy table when computed and the published source's manifest."""
    return {
        "klom": klom_files(),
        "unlearned": unlearned_margin_files(),
        "oracle": expand(
            rules.gather_oracle_margins.output.scored, forget_set=FORGET_SETS
        ),
        "holdout": expand(
            rules.gather_oracle_margins.output.holdout, forget_set=FORGET_SETS
        ),
        "forget_sets": expand(
            rules.make_forget_set.output.indices, forget_set=FORGET_SETS
        ),
        "privacy": [rules.reduce_privacy.output.table] if privacy_enabled() else [],
        "manifest": source_manifest(),
    }
