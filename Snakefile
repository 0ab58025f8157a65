# klomflow: train originals and oracles, unlearn, score with KLOM.
# Run `snakemake --cores all`; the tables land in results/tables/.
from snakemake.utils import min_version

from klomflow import job_control

min_version("9.0")


# config.yaml unless --configfile names another (a merge would mix their methods).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


# `snakemake --report results/report.html`: the figures of rules/report.smk; it opens on
# this description, with the KLOM table (profiles/default names the report's metadata).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/forget_sets.smk"
include: "rules/train.smk"
include: "rules/datamodels.smk"
include: "rules/unlearn.smk"
include: "rules/klom.smk"
include: "rules/tables.smk"
include: "rules/corrective.smk"
include: "rules/paper.smk"
include: "rules/report.smk"
include: "rules/privacy.smk"
include: "rules/explorer.smk"


rule all:
    default_target: True
    input:
        rules.reduce_klom.output,
        rules.tabulate_accuracy.output,
        rules.make_paper_tables.output,
        report_figures(),
        privacy_outputs(),
        rules.build_explorer.output,
        rules.summarise_for_report.output,
        # Corrective unlearning, when the config has identified forget sets.
        corrective_outputs(),
    localrule: True


# A local run's jobs fork from one process that has imported torch and pandas, instead of
# importing them each (about 3 s a job); klomflow/job_server.py. KLOMFLOW_JOB_SERVER=off: not.
# stop() warns, as the run's last words, when most jobs ran cold anyway.
onstart:
    job_control.start(local=workflow.local_exec)


onerror:
    job_control.stop()


onsuccess:
    print(
        "\nklomflow: KLOM tables are in results/tables/ "
        "(klom.parquet, accuracy.parquet, klom_summary.md, paper_klom.md, "
        "paper_accuracy.md); the report: snakemake --report results/report.html"
    )
    job_control.stop()
