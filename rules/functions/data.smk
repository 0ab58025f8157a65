# Input functions of rules/data.smk.
import klomflow.jobs.published


def label_inputs(wildcards):
    """Published model 0's files: the labels when the dataset's files are absent."""
    if SOURCE is None:
        return {}
    return {
        "published": existing(klomflow.jobs.published.model_zero_files(SOURCE).values())
    }


def manipulation_params():
    """The training-set manipulations (docs/corrective.md), where there are any: a run
    without them keeps the params it had (and its results)."""
    if not config.get("manipulations"):
        return {}
    return {"manipulations": config["manipulations"]}
