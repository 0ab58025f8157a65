# Per-point KLOM: each method setting against the scored oracles, against the
# held-out oracles (to select settings by), and the noise floor (held-out
# oracles against the scored oracles).


# The input and params functions of the rules below.
include: "functions/klom.smk"


# One job per setting writes both per-point files, against the scored oracles and against
# the held-out ones (the selection criterion, klomflow/reporting/selection.py): one process start, not two.
rule compute_klom:
    input:
        unlearned=rules.gather_unlearned_margins.output.margins,
        oracle=rules.gather_oracle_margins.output.scored,
        holdout_oracle=rules.gather_oracle_margins.output.holdout,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom="results/klom/{forget_set}/{method}/{config_id}.parquet",
        holdout="results/klom_holdout/{forget_set}/{method}/{config_id}.parquet",
    log:
        "results/logs/compute_klom/{forget_set}/{method}/{config_id}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom=klom_params,
        holdout=holdout_klom_params,
    script:
        "../workflow_scripts/compute_klom.py"


rule compute_noise_floor:
    input:
        unlearned=rules.gather_oracle_margins.output.holdout,
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
        points=rules.prepare_data.output.points,
    output:
        klom=f"results/klom/{{forget_set}}/{NOISE_FLOOR}/{NOISE_FLOOR_CONFIG_ID}.parquet",
    log:
        "results/logs/compute_noise_floor/{forget_set}.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom=klom_params,
    script:
        "../workflow_scripts/compute_klom.py"
