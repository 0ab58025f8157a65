# The dataset: the evaluation points, and an explicit download for torchvision datasets.


# The input and params functions of the rules below.
include: "functions/data.smk"


rule prepare_data:
    input:
        # With a published source and no dataset files: labels from its model 0.
        unpack(label_inputs),
    output:
        points="results/data/points.parquet",
    log:
        "results/logs/prepare_data.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        **manipulation_params(),
        dataset=config["dataset"],
    script:
        "../workflow_scripts/prepare_data.py"


# Only when asked for: `snakemake --cores 1 download_data` (needs the network).
rule download_data:
    output:
        marker=f"{config['dataset']['data_dir']}/.klomflow_{config['dataset']['name']}_downloaded",
    log:
        "results/logs/download_data.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        dataset=config["dataset"],
    script:
        "../workflow_scripts/download_data.py"
