# The report's figures (rules/report.smk; rules/privacy.smk adds one).


FIGURES = [
    "klom_p95",
    "klom_distribution",
    "margin_histograms",
    "klom_vs_cost",
    "accuracy_vs_klom",
]


def report_figures(wildcards=None):
    return expand(
        "results/report/{forget_set}/{figure}.png",
        forget_set=FORGET_SETS,
        figure=FIGURES,
    )


def forget_set_setting_files(wildcards):
    """Per-point KLOM and unlearned margins of every setting run on the forget set."""
    return {
        "klom": setting_outputs(rules.compute_klom.output.klom, [wildcards.forget_set]),
        "unlearned": setting_outputs(
            rules.gather_unlearned_margins.output.margins, [wildcards.forget_set]
        ),
    }


def figure_output(name, subcategory):
    return report(
        f"results/report/{{forget_set}}/{name}.png",
        caption=f"../report/{name}.rst",
        category="{forget_set}",
        subcategory=subcategory,
        labels={"forget set": "{forget_set}", "figure": subcategory},
    )
