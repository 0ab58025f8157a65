# The input lists of rules/tables.smk: every setting's files, and the accuracy
# tables' logit groups (rules/paper.smk uses them too).


def klom_files(wildcards=None):
    noise_floor = expand(rules.compute_noise_floor.output.klom, forget_set=FORGET_SETS)
    return noise_floor + setting_outputs(rules.compute_klom.output.klom)


def holdout_klom_files(wildcards=None):
    return setting_outputs(rules.compute_klom.output.holdout)


def unlearned_margin_files(wildcards=None):
    return setting_outputs(rules.gather_unlearned_margins.output.margins)


def unlearned_run_files(wildcards=None):
    return setting_outputs(rules.gather_unlearned_margins.output.runs)


def accuracy_logit_groups(forget_sets=None):
    """Logit shards per model group of the accuracy tables (top-1), keyed as
    klomflow.reporting.tables.group_key; published models have none (margin accuracy).
    """
    forget_sets = FORGET_SETS if forget_sets is None else forget_sets
    groups = {}
    if SOURCE is None:
        groups["original"] = original_logit_shards(None)
    for forget_set in TRAINED_ORACLES:
        if forget_set in forget_sets:
            groups[f"oracle/{forget_set}"] = expand(
                rules.train_oracles.output.logits,
                forget_set=forget_set,
                shard=range(n_shards("oracle")),
            )
    for setting in SETTINGS:
        if reuses_original_margins(setting):
            continue
        for forget_set in setting.forget_sets:
            if forget_set in forget_sets:
                key = f"unlearned/{forget_set}/{setting.entry}/{setting.config_id}"
                groups[key] = expand(
                    rules.unlearn.output.logits,
                    forget_set=forget_set,
                    method=setting.entry,
                    config_id=setting.config_id,
                    shard=range(n_shards("original")),
                )
    # Sorted: a lookup table, and a rule's param, whose repr must not follow the config's order.
    return dict(sorted(groups.items()))


def accuracy_logit_files(forget_sets=None):
    return [
        path for paths in accuracy_logit_groups(forget_sets).values() for path in paths
    ]
