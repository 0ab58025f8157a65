# Input functions of rules/data.smk.
import klomflow.jobs.published


def label_inputs(wildcards):
    """Published model 0's files: the labels when the dataset's files are absent."""
    if SOURCE is None:
        return {}
    return {
        "published": existing(klomflow.jobs.published.model_zero_files(SOURCE).values())
    }
