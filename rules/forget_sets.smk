# Forget sets: sorted training indices, one file per named set, and a sidecar
# (.json) that records how the set was made.


# The input and params functions of the rules below.
include: "functions/forget_sets.smk"


# Static kinds (random, class, indices, published, subpopulation): from the labels.
rule make_forget_set:
    input:
        unpack(published_forget_set_file),
        points=rules.prepare_data.output.points,
    output:
        indices="results/forget_sets/{forget_set}.npy",
        sidecar="results/forget_sets/{forget_set}.json",
    log:
        "results/logs/make_forget_set/{forget_set}.log",
    wildcard_constraints:
        forget_set=names_pattern(
            [f for f in FORGET_SETS if f not in DERIVED_FORGET_SETS]
        ),
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        spec=forget_set_spec,
    script:
        "../workflow_scripts/make_forget_set.py"


# Derived kinds (datamodel_pc, nearest_neighbors, worst_case): from trained models,
# in a job of its own (a bilevel proxy trains a pilot model; penultimate features
# run the originals).
rule derive_forget_set:
    input:
        unpack(derived_forget_set_inputs),
        points=rules.prepare_data.output.points,
    output:
        indices="results/forget_sets/{forget_set}.npy",
        sidecar="results/forget_sets/{forget_set}.json",
    log:
        "results/logs/derive_forget_set/{forget_set}.log",
    wildcard_constraints:
        forget_set=names_pattern(DERIVED_FORGET_SETS),
    conda:
        "../envs/klomflow.yaml"
    threads: 1
    params:
        derivation=derived_forget_set_params,
    script:
        "../workflow_scripts/derive_forget_set.py"
