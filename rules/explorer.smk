# The explorer page: one self-contained HTML file of the run (klomflow/reporting/explorer_page.py),
# opened from disk; docs/outputs.md says what it shows.


# The input functions of the rule below.
include: "functions/explorer.smk"


rule build_explorer:
    input:
        unpack(explorer_inputs),
        klom_table=rules.reduce_klom.output.table,
        paper_table=rules.make_paper_tables.output.klom_table,
        accuracy=rules.tabulate_accuracy.output.table,
        points=rules.prepare_data.output.points,
        original=rules.gather_original_margins.output.margins,
    output:
        page="results/explorer.html",
    log:
        "results/logs/build_explorer.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    params:
        klom_options=config["klom"],
        explorer=config["explorer"],
        seed=config["models"]["base_seed"],
        dataset=config["dataset"],
    script:
        "../workflow_scripts/build_explorer.py"
