# Figures for `snakemake --report results/report.html`, one set per forget set
# (klomflow/reporting/figures.py; captions in report/).


# The input and params functions of the rules below.
include: "functions/report.smk"


rule plot_forget_set:
    input:
        unpack(forget_set_setting_files),
        noise_floor=rules.compute_noise_floor.output.klom,
        klom_table=rules.reduce_klom.output.table,
        paper_table=rules.make_paper_tables.output.klom_table,
        accuracy=rules.tabulate_accuracy.output.table,
        training_seconds=rules.tabulate_training_seconds.output.table,
        oracle=rules.gather_oracle_margins.output.scored,
        forget_set=rules.make_forget_set.output.indices,
    output:
        klom_p95=figure_output("klom_p95", "p95 KLOM per method and split"),
        klom_distribution=figure_output(
            "klom_distribution", "per-point KLOM distribution"
        ),
        margin_histograms=figure_output(
            "margin_histograms", "unlearned and oracle margins"
        ),
        klom_vs_cost=figure_output("klom_vs_cost", "KLOM against unlearning cost"),
        accuracy_vs_klom=figure_output("accuracy_vs_klom", "accuracy against KLOM"),
    log:
        "results/logs/plot_forget_set/{forget_set}.log",
    conda:
        "../envs/klomflow.yaml"
    params:
        histogram_points=config["paper"]["histogram_points"],
        klom_options=config["klom"],
    script:
        "../workflow_scripts/plot_forget_set.py"


# The KLOM table that the report opens on (report/workflow.rst includes it) and lists under
# "Results"; klomflow/reporting/report_landing.py.
rule summarise_for_report:
    input:
        klom_table=rules.reduce_klom.output.table,
        paper_table=rules.make_paper_tables.output.klom_table,
    output:
        table=report(
            "results/report/results.html",
            caption="../report/results.rst",
            category="Results",
            subcategory="KLOM table",
            labels={"table": "KLOM p95 per method and split"},
        ),
    log:
        "results/logs/summarise_for_report.log",
    localrule: True
    conda:
        "../envs/klomflow.yaml"
    script:
        "../workflow_scripts/summarise_for_report.py"
