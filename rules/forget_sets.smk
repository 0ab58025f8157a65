# Forget sets: sorted training indices, one file per named set.


rule make_forget_set:
    input:
        unpack(published_forget_set_file),
        points=rules.prepare_data.output.points,
    output:
        indices="results/forget_sets/{forget_set}.npy",
    log:
        "results/logs/make_forget_set/{forget_set}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        spec=forget_set_spec,
    script:
        "../workflow_scripts/make_forget_set.py"
