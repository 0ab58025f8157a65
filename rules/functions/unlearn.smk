# Input and params functions of rules/unlearn.smk.
import dataclasses

from snakemake.exceptions import WorkflowError


# Files behind each name a method may list in Method.needs; the unlearn script
# loads them into UnlearningData.extras under the same name. The names are
# klomflow.unlearning.methods.registry.EXTRA_INPUTS, which user methods' SPECs are checked
# against.
def extra_inputs():
    return {
        "holdout_oracle_logits": rules.gather_holdout_oracle_logits.output.logits,
        "datamodel_rows": rules.compute_datamodel_rows.output.rows,
    }


def method_extra_inputs(wildcards):
    setting = method_setting(wildcards)
    needs = METHOD_SPECS[setting.implementation].needs
    provided = extra_inputs()
    unknown = [name for name in needs if name not in provided]
    if unknown:
        raise WorkflowError(
            f"{setting.implementation} needs {unknown}, which no rule provides"
        )
    return {name: provided[name].format(**wildcards) for name in needs}


def unlearning_params(wildcards):
    """What defines an unlearned shard; a change here reruns it (rerun trigger)."""
    setting = method_setting(wildcards)
    return {
        "method": setting.implementation,
        "params": setting.params,
        # A built-in's explicit version; a user method's code fingerprint ("code-..."),
        # so an edit to its file or its helpers reruns exactly its jobs.
        "method_version": METHOD_SPECS[setting.implementation].version,
        "training": original_training_params(wildcards),
    }


def job_setting(wildcards):
    """The MethodSetting an unlearning job runs, on the job's forget set only.

    An object, not a plain value: Snakemake leaves it out of the rerun check,
    which `unlearning_params` defines.
    """
    setting = method_setting(wildcards)
    return dataclasses.replace(setting, forget_sets=(wildcards.forget_set,))


# models.save_unlearned_checkpoints: the unlearned weights, a declared output.
UNLEARNED_CHECKPOINT = {
    "checkpoint": "results/models/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.pt"
}


def unlearned_logit_shards(wildcards):
    if reuses_original_margins(method_setting(wildcards)):
        return []
    return expand(
        rules.unlearn.output.logits,
        forget_set=wildcards.forget_set,
        method=wildcards.method,
        config_id=wildcards.config_id,
        shard=range(n_shards("original")),
    )


def do_nothing_inputs(wildcards):
    if not reuses_original_margins(method_setting(wildcards)):
        return {}
    return {"original": rules.gather_original_margins.output.margins}


def unlearned_run_shards(wildcards):
    if reuses_original_margins(method_setting(wildcards)):
        return []
    return expand(
        rules.unlearn.output.runs,
        forget_set=wildcards.forget_set,
        method=wildcards.method,
        config_id=wildcards.config_id,
        shard=range(n_shards("original")),
    )
