# Per-point KLOM: each method setting against the scored oracles, and the noise
# floor (held-out oracles against the scored oracles).


rule compute_klom:
    input:
        unlearned=rules.gather_unlearned_margins.output.margins,
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom="results/klom/{forget_set}/{method}/{config_id}.parquet",
    params:
        klom=klom_params,
    log:
        "results/logs/compute_klom/{forget_set}/{method}/{config_id}.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/compute_klom.py"


rule compute_noise_floor:
    input:
        unlearned=rules.gather_oracle_margins.output.holdout,
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom="results/klom/{forget_set}/oracle_holdout/reference.parquet",
    params:
        klom=klom_params,
    log:
        "results/logs/compute_noise_floor/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/compute_klom.py"
