# Config validation and the input functions every stage uses.
import json

from snakemake.exceptions import WorkflowError

import klomflow.config
import klomflow.datamodels
import klomflow.paper
import klomflow.runs
from klomflow import klom as klom_module
from klomflow import training
from klomflow.io import shard_ranges
from klomflow.methods import METHODS
from klomflow.tables import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID

# The config file(s) in use, for messages: --configfile replaces config.yaml.
CONFIG_FILES = ", ".join(
    str(path) for path in workflow.config_settings.configfiles or ["config.yaml"]
)

# Validate everything before any job is planned; the message names the file and key.
try:
    RESOLVED = klomflow.config.validate(config, base_dir=".")
except klomflow.config.ConfigError as error:
    raise WorkflowError(f"{CONFIG_FILES}: {error}") from None
# Scripts read the resolved config (defaults filled in) through snakemake.config.
config.update(RESOLVED)

SETTINGS = klomflow.config.method_settings(config)
SETTING_BY_ID = {(s.entry, s.config_id): s for s in SETTINGS}
FORGET_SETS = list(config["forget_sets"])


wildcard_constraints:
    shard=r"\d+",
    forget_set=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"(?!oracle_holdout$)[A-Za-z0-9][A-Za-z0-9_.-]*",
    config_id=r"[0-9a-f]{10}",


def n_shards(role):
    return len(
        shard_ranges(
            klomflow.runs.n_models(config, role),
            klomflow.runs.seeds_per_job(config, role),
        )
    )


def forget_set_spec(wildcards):
    if wildcards.forget_set not in config["forget_sets"]:
        raise WorkflowError(
            f"forget set {wildcards.forget_set!r} is not in {CONFIG_FILES}"
        )
    return config["forget_sets"][wildcards.forget_set]


def training_params(wildcards, role):
    """What defines a trained shard; a change here retrains it (rerun trigger)."""
    models = config["models"]
    indices = klomflow.runs.shard_indices(config, role, int(wildcards.shard))
    return {
        "dataset": config["dataset"],
        "model": config["model"],
        "train": config["train"],
        "base_seed": models["base_seed"],
        "models": [indices.start, indices.stop],
        "training_version": training.VERSION,
    }


def original_training_params(wildcards):
    return training_params(wildcards, "original")


def oracle_training_params(wildcards):
    return training_params(wildcards, "oracle")


def subset_training_params(wildcards):
    fraction = {"subset_fraction": config["datamodels"]["subset_fraction"]}
    return training_params(wildcards, "subset") | fraction


def subset_logit_shards(wildcards):
    return expand(
        "results/logits/subset/shard_{shard}.npy", shard=range(n_shards("subset"))
    )


def subset_mask_shards(wildcards):
    return expand(
        "results/datamodels/masks/shard_{shard}.npy", shard=range(n_shards("subset"))
    )


def datamodel_fit_params(wildcards):
    """What defines the fitted datamodels besides their inputs (rerun trigger)."""
    return {
        "ridge": config["datamodels"]["ridge"],
        "datamodels_version": klomflow.datamodels.VERSION,
    }


def original_logit_shards(wildcards):
    return expand(
        "results/logits/original/shard_{shard}.npy", shard=range(n_shards("original"))
    )


def oracle_logit_shards(wildcards):
    return expand(
        "results/logits/oracle/{forget_set}/shard_{shard}.npy",
        forget_set=wildcards.forget_set,
        shard=range(n_shards("oracle")),
    )


def method_setting(wildcards):
    """The MethodSetting a job's wildcards name, or an error naming them."""
    key = (wildcards.method, wildcards.config_id)
    if key not in SETTING_BY_ID:
        raise WorkflowError(f"no method setting {key} in {CONFIG_FILES}")
    return SETTING_BY_ID[key]


# Files behind each name a method may list in Method.needs; the unlearn script
# loads them into UnlearningData.extras under the same name.
EXTRA_INPUTS = {
    "holdout_oracle_logits": "results/logits/oracle_holdout/{forget_set}.npy",
    "datamodels": "results/datamodels/datamodels.npy",
}


def method_extra_inputs(wildcards):
    setting = method_setting(wildcards)
    needs = METHODS[setting.method].needs
    unknown = [name for name in needs if name not in EXTRA_INPUTS]
    if unknown:
        raise WorkflowError(f"{setting.method} needs {unknown}, which no rule provides")
    return {name: EXTRA_INPUTS[name].format(**wildcards) for name in needs}


def unlearning_params(wildcards):
    """What defines an unlearned shard; a change here reruns it (rerun trigger)."""
    setting = method_setting(wildcards)
    return {
        "method": setting.method,
        "params": setting.params,
        "method_version": METHODS[setting.method].version,
        "training": original_training_params(wildcards),
    }


def unlearned_logit_shards(wildcards):
    return expand(
        "results/logits/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.npy",
        forget_set=wildcards.forget_set,
        method=wildcards.method,
        config_id=wildcards.config_id,
        shard=range(n_shards("original")),
    )


def unlearned_run_shards(wildcards):
    return expand(
        "results/runs/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.parquet",
        forget_set=wildcards.forget_set,
        method=wildcards.method,
        config_id=wildcards.config_id,
        shard=range(n_shards("original")),
    )


def klom_params(wildcards):
    """KLOM options and identity of a per-point KLOM file (rerun trigger)."""
    identity = {
        "dataset": config["dataset"]["name"],
        "model": config["model"]["name"],
        "forget_set": wildcards.forget_set,
    }
    if wildcards.get("method", NOISE_FLOOR) == NOISE_FLOOR:
        identity |= {"method": NOISE_FLOOR, "config_id": NOISE_FLOOR_CONFIG_ID}
        identity |= {"implementation": NOISE_FLOOR, "params": "{}", "diagnostic": False}
    else:
        setting = method_setting(wildcards)
        identity |= {"method": setting.entry, "config_id": setting.config_id}
        identity |= {
            "implementation": setting.method,
            "params": json.dumps(setting.params, sort_keys=True),
            "diagnostic": METHODS[setting.method].diagnostic,
        }
    return {
        "identity": identity,
        "klom_options": config["klom"],
        "klom_version": klom_module.VERSION,
    }


def holdout_klom_params(wildcards):
    """KLOM against the held-out oracles: the selection criterion (klomflow/paper.py)."""
    return klom_params(wildcards) | {"reference": "holdout"}


def setting_outputs(pattern):
    """`pattern` filled in for every (forget set, method setting) pair."""
    return [
        pattern.format(forget_set=forget_set, method=s.entry, config_id=s.config_id)
        for s in SETTINGS
        for forget_set in s.forget_sets
    ]


def klom_files(wildcards=None):
    noise_floor = expand(
        "results/klom/{forget_set}/{method}/{config_id}.parquet",
        forget_set=FORGET_SETS,
        method=NOISE_FLOOR,
        config_id=NOISE_FLOOR_CONFIG_ID,
    )
    return noise_floor + setting_outputs(
        "results/klom/{forget_set}/{method}/{config_id}.parquet"
    )


def holdout_klom_files(wildcards=None):
    return setting_outputs(
        "results/klom_holdout/{forget_set}/{method}/{config_id}.parquet"
    )


def unlearned_margin_files(wildcards=None):
    return setting_outputs(
        "results/margins/unlearned/{forget_set}/{method}/{config_id}.npy"
    )


def unlearned_logit_files(forget_sets=None):
    """Every setting's unlearned logit shards, in shard order (top-1 accuracy)."""
    return [
        f"results/logits/unlearned/{f}/{s.entry}/{s.config_id}/shard_{k}.npy"
        for s in SETTINGS
        for f in s.forget_sets
        if forget_sets is None or f in forget_sets
        for k in range(n_shards("original"))
    ]


def oracle_logit_files(forget_sets):
    """Scored and held-out oracles' logit shards of `forget_sets`, in shard order."""
    return expand(
        "results/logits/oracle/{forget_set}/shard_{shard}.npy",
        forget_set=forget_sets,
        shard=range(n_shards("oracle")),
    )


def unlearned_run_files(wildcards=None):
    return setting_outputs(
        "results/runs/unlearned/{forget_set}/{method}/{config_id}.parquet"
    )


def final_tables():
    return [
        "results/tables/klom.parquet",
        "results/tables/klom_summary.md",
        "results/tables/accuracy.parquet",
        *paper_table_files(),
        *report_figures(),
    ]


# --- Paper tables and report (rules/paper.smk, rules/report.smk) ---


def entry_settings(wildcards):
    """The settings of method entry `method` that run on `forget_set`."""
    settings = [
        s
        for s in SETTINGS
        if s.entry == wildcards.method and wildcards.forget_set in s.forget_sets
    ]
    if not settings:
        raise WorkflowError(
            f"method {wildcards.method!r} does not run on forget set {wildcards.forget_set!r}"
        )
    return sorted(settings, key=lambda s: s.config_id)


def interval_inputs(wildcards):
    """Per setting of the entry: scored and held-out per-point KLOM, unlearned margins."""
    settings = entry_settings(wildcards)
    paths = {
        "scored": "results/klom/{forget_set}/{method}/{config_id}.parquet",
        "holdout": "results/klom_holdout/{forget_set}/{method}/{config_id}.parquet",
        "unlearned": "results/margins/unlearned/{forget_set}/{method}/{config_id}.npy",
    }
    return {
        name: [
            pattern.format(
                forget_set=wildcards.forget_set, method=s.entry, config_id=s.config_id
            )
            for s in settings
        ]
        for name, pattern in paths.items()
    }


def interval_params(wildcards):
    """What defines an interval file (rerun trigger)."""
    if wildcards.get("method", NOISE_FLOOR) == NOISE_FLOOR:
        config_ids, diagnostic = [NOISE_FLOOR_CONFIG_ID], False
    else:
        settings = entry_settings(wildcards)
        config_ids = [s.config_id for s in settings]
        diagnostic = METHODS[settings[0].method].diagnostic
    return {
        "config_ids": config_ids,
        "diagnostic": diagnostic,
        "klom_options": config["klom"],
        "resampling": {
            "n_resamples": config["paper"]["resamples"],
            "delete_fraction": config["paper"]["delete_fraction"],
            "interval": config["paper"]["interval"],
            "seed": config["paper"]["resample_seed"],
        },
        "klom_version": klom_module.VERSION,
        "paper_version": klomflow.paper.VERSION,
    }


def interval_files(wildcards=None):
    entries = expand(
        "results/intervals/{forget_set}/{method}.parquet",
        forget_set=FORGET_SETS,
        method=NOISE_FLOOR,
    )
    pairs = sorted({(f, s.entry) for s in SETTINGS for f in s.forget_sets})
    return entries + [
        f"results/intervals/{forget_set}/{method}.parquet"
        for forget_set, method in pairs
    ]


def class_forget_sets():
    return [f for f in FORGET_SETS if config["forget_sets"][f]["kind"] == "class"]


def class_setting_files(pattern):
    return [
        pattern.format(forget_set=f, method=s.entry, config_id=s.config_id)
        for s in SETTINGS
        for f in s.forget_sets
        if f in class_forget_sets()
    ]


def oracle_checkpoints(wildcards=None):
    return expand(
        "results/models/oracle/{forget_set}/shard_{shard}.pt",
        forget_set=FORGET_SETS,
        shard=range(n_shards("oracle")),
    )


def original_checkpoints(wildcards=None):
    return expand(
        "results/models/original/shard_{shard}.pt", shard=range(n_shards("original"))
    )


def paper_table_files():
    return expand(
        "results/tables/paper_{table}.{extension}",
        table=["klom", "accuracy"],
        extension=["md", "tex", "parquet"],
    )


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
    settings = [s for s in SETTINGS if wildcards.forget_set in s.forget_sets]

    def fill(pattern):
        return [
            pattern.format(
                forget_set=wildcards.forget_set, method=s.entry, config_id=s.config_id
            )
            for s in settings
        ]

    return {
        "klom": fill("results/klom/{forget_set}/{method}/{config_id}.parquet"),
        "unlearned": fill(
            "results/margins/unlearned/{forget_set}/{method}/{config_id}.npy"
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
