# Forget sets: sorted training indices, one file per named set.


def forget_set_spec(wildcards):
    if wildcards.forget_set not in config["forget_sets"]:
        raise WorkflowError(f"forget set {wildcards.forget_set!r} is not in config.yaml")
    return config["forget_sets"][wildcards.forget_set]


rule make_forget_set:
    input:
        points=rules.prepare_data.output.points,
    output:
        indices="results/forget_sets/{forget_set}.npy",
    params:
        spec=forget_set_spec,
    log:
        "results/logs/make_forget_set/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/make_forget_set.py"
