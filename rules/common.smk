# Config validation and the input functions every stage uses.
import json
import re

from snakemake.exceptions import WorkflowError

import klomflow.config
import klomflow.training.datamodels
import klomflow.forget_sets.kinds
import klomflow.reporting.selection
import klomflow.data.published.layout
import klomflow.jobs.published
import klomflow.versions
from klomflow.metrics import klom as klom_module
from klomflow.io import shard_ranges
from klomflow.unlearning.methods.registry import REGISTRY
from klomflow.reporting.names import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID

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
# A published folder (models.source) the originals, and the oracles of published
# forget sets, are read from instead of trained; None when everything trains here.
SOURCE = klomflow.data.published.layout.Source.from_config(config)
IMPORTED_ORACLES = [
    f for f in FORGET_SETS if klomflow.config.is_imported(config, "oracle", f)
]
TRAINED_ORACLES = [f for f in FORGET_SETS if f not in IMPORTED_ORACLES]


wildcard_constraints:
    shard=r"\d+",
    forget_set=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=rf"(?!{NOISE_FLOOR}$)[A-Za-z0-9][A-Za-z0-9_.-]*",
    config_id=r"[0-9a-f]{10}",


def n_shards(role):
    return len(
        shard_ranges(
            klomflow.config.n_models(config, role),
            klomflow.config.seeds_per_job(config, role),
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
    indices = klomflow.config.shard_indices(config, role, int(wildcards.shard))
    return {
        "dataset": config["dataset"],
        "model": config["model"],
        "train": config["train"],
        "base_seed": models["base_seed"],
        "models": [indices.start, indices.stop],
        "training_version": klomflow.versions.TRAINING,
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
        rules.train_subset_models.output.logits, shard=range(n_shards("subset"))
    )


def subset_mask_shards(wildcards):
    return expand(
        rules.train_subset_models.output.masks, shard=range(n_shards("subset"))
    )


def datamodel_fit_params(wildcards):
    """What defines the fitted datamodels besides their inputs (rerun trigger)."""
    return {
        "ridge": config["datamodels"]["ridge"],
        "datamodels_version": klomflow.training.datamodels.VERSION,
    }


def original_logit_shards(wildcards):
    return expand(
        rules.train_originals.output.logits, shard=range(n_shards("original"))
    )


def oracle_logit_shards(wildcards):
    return expand(
        rules.train_oracles.output.logits,
        forget_set=wildcards.forget_set,
        shard=range(n_shards("oracle")),
    )


# Written by train_originals or, from a published folder, by import_originals.
ORIGINAL_CHECKPOINT = "results/models/original/shard_{shard}.pt"


# --- Published sources (models.source; klomflow/data/published/) ---


def existing(paths):
    return [str(path) for path in paths if path.exists()]


def published_original_files():
    """The originals' published margin files, and the logit files their labels are checked on."""
    n_models = config["models"]["n_originals"]
    margins = SOURCE.original_files(n_models, "margins")
    logits = SOURCE.original_files(n_models, "logits")
    files = [str(path) for paths in margins.values() for path in paths]
    if margins != logits:
        files += existing(path for paths in logits.values() for path in paths)
    return files


def published_oracle_files(forget_set, kind="margins"):
    spec = config["forget_sets"][forget_set]
    n_models = config["models"]["n_oracles"] + config["models"]["n_holdout_oracles"]
    files = SOURCE.oracle_files(spec["id"], n_models, kind)
    listed = [str(path) for paths in files.values() for path in paths]
    listed.append(str(SOURCE.forget_set_file(spec["id"])))
    if SOURCE.layout == "easydub":  # settles the order of the forget files
        listed += existing([SOURCE.original_forget_file(spec["id"])])
    return listed


# --- Forget sets (rules/forget_sets.smk; klomflow/forget_sets/kinds.py) ---
# Static kinds are made from the labels by a local rule; derived kinds by a job
# that reads trained models. One output pattern, told apart by the set's name.
DERIVED_FORGET_SETS = [
    f
    for f in FORGET_SETS
    if config["forget_sets"][f]["kind"] in klomflow.forget_sets.kinds.DERIVED_KINDS
]


def names_pattern(names):
    """A regex matching exactly `names` (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def derived_forget_set_inputs(wildcards):
    """The files a derived forget set is computed from: Snakemake makes them first
    and remakes the set (and its oracles) when they change."""
    spec = forget_set_spec(wildcards)
    needed = klomflow.forget_sets.kinds.inputs_needed(spec)
    inputs = {}
    if "margin_datamodel" in needed:
        inputs["margin_datamodel"] = "results/datamodels/margin_train.npy"
    if "subset_models" in needed:
        inputs["subset_logits"] = subset_logit_shards(wildcards)
        inputs["subset_masks"] = subset_mask_shards(wildcards)
    if "originals" in needed:
        inputs["originals"] = original_checkpoints_of(range(spec["models"]))
    if "embedding_file" in needed:
        inputs["embedding"] = str(klomflow.forget_sets.kinds.spec_path(spec))
    return inputs


def original_checkpoints_of(models):
    """The originals' checkpoint shards that hold `models` (trained or imported)."""
    per_job = klomflow.config.seeds_per_job(config, "original")
    shards = sorted({k // per_job for k in models})
    return expand(ORIGINAL_CHECKPOINT, shard=shards)


def derived_forget_set_params(wildcards):
    """What defines a derived set besides its input files (rerun trigger)."""
    spec = forget_set_spec(wildcards)
    params = {"spec": spec, "version": klomflow.versions.FORGET_SETS}
    if spec["kind"] == "worst_case" and spec["proxy"] == "inout_klom":
        params["klom_options"] = config["klom"]
    if spec["kind"] == "worst_case" and spec["proxy"] == "bilevel":
        # The pilot model trains here with the run's recipe.
        params["training"] = {
            key: config[key] for key in ("dataset", "model", "train")
        } | {
            "base_seed": config["models"]["base_seed"],
            "training_version": klomflow.versions.TRAINING,
        }
    return params


def published_forget_set_file(wildcards):
    spec = forget_set_spec(wildcards)
    if spec["kind"] != "published":
        return {}
    return {"published": str(SOURCE.forget_set_file(spec["id"]))}


def original_margin_inputs(wildcards):
    """Trained originals' logit shards, or the published folder's files."""
    if SOURCE is None:
        return {"logits": original_logit_shards(wildcards)}
    return {"published": published_original_files()}


def oracle_margin_inputs(wildcards):
    if wildcards.forget_set not in IMPORTED_ORACLES:
        return {"logits": oracle_logit_shards(wildcards)}
    return {
        "published": published_oracle_files(wildcards.forget_set),
        "original": rules.gather_original_margins.output.margins,
    }


def holdout_oracle_logit_inputs(wildcards):
    if wildcards.forget_set not in IMPORTED_ORACLES:
        return {"logits": oracle_logit_shards(wildcards)}
    return {"published": published_oracle_files(wildcards.forget_set, "logits")}


def label_inputs(wildcards):
    """Published model 0's files: the labels when the dataset's files are absent."""
    if SOURCE is None:
        return {}
    return {"published": existing(klomflow.jobs.published.model_zero_files(SOURCE).values())}


def original_shard_models(wildcards):
    """Model ids of an originals' shard."""
    return list(klomflow.config.shard_indices(config, "original", int(wildcards.shard)))


def published_checkpoints(wildcards):
    return [
        str(SOURCE.original_checkpoint(k)) for k in original_shard_models(wildcards)
    ]


def needs_checkpoints():
    """Unlearning jobs run (they start from the originals' checkpoints)."""
    return any(not reuses_original_margins(s) for s in SETTINGS)


def reuses_original_margins(setting):
    """do_nothing on published originals: their published margins, no job."""
    return SOURCE is not None and setting.implementation == "do_nothing"


def published_source_files(wildcards=None):
    files = published_original_files()
    for forget_set in IMPORTED_ORACLES:
        files += published_oracle_files(forget_set)
    if needs_checkpoints():
        files += [
            str(SOURCE.original_checkpoint(k))
            for k in range(config["models"]["n_originals"])
        ]
    return sorted(set(files))


def source_manifest(wildcards=None):
    """The published files' digests, which every table's provenance holds; none when training."""
    return [] if SOURCE is None else [klomflow.jobs.published.MANIFEST_PATH]


def method_setting(wildcards):
    """The MethodSetting a job's wildcards name, or an error naming them."""
    key = (wildcards.method, wildcards.config_id)
    if key not in SETTING_BY_ID:
        raise WorkflowError(f"no method setting {key} in {CONFIG_FILES}")
    return SETTING_BY_ID[key]


# Files behind each name a method may list in Method.needs; the unlearn script
# loads them into UnlearningData.extras under the same name.
def extra_inputs():
    return {
        "holdout_oracle_logits": rules.gather_holdout_oracle_logits.output.logits,
        "datamodels": rules.fit_datamodels.output.datamodels,
    }


def method_extra_inputs(wildcards):
    setting = method_setting(wildcards)
    needs = REGISTRY[setting.implementation].needs
    provided = extra_inputs()
    unknown = [name for name in needs if name not in provided]
    if unknown:
        raise WorkflowError(
            f"{setting.implementation} needs {unknown}, which no rule provides"
        )
    return {name: provided[name].format(**wildcards) for name in needs}


def unlearning_params(wildcards):
    """What defines an unlearned shard; a change here reruns it (rerun trigger)."""
    setting = method_setting(wildcards)
    return {
        "method": setting.implementation,
        "params": setting.params,
        "method_version": REGISTRY[setting.implementation].version,
        "training": original_training_params(wildcards),
    }


def unlearned_logit_shards(wildcards):
    if reuses_original_margins(method_setting(wildcards)):
        return []
    return expand(
        rules.unlearn.output.logits,
        forget_set=wildcards.forget_set,
        method=wildcards.method,
        config_id=wildcards.config_id,
        shard=range(n_shards("original")),
    )


def do_nothing_inputs(wildcards):
    if not reuses_original_margins(method_setting(wildcards)):
        return {}
    return {"original": rules.gather_original_margins.output.margins}


def unlearned_run_shards(wildcards):
    if reuses_original_margins(method_setting(wildcards)):
        return []
    return expand(
        rules.unlearn.output.runs,
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
            "implementation": setting.implementation,
            "params": json.dumps(setting.params, sort_keys=True),
            "diagnostic": REGISTRY[setting.implementation].diagnostic,
        }
    return {
        "identity": identity,
        "klom_options": config["klom"],
        "klom_version": klom_module.VERSION,
    }


def holdout_klom_params(wildcards):
    """KLOM against the held-out oracles: the selection criterion (klomflow/reporting/selection.py)."""
    return klom_params(wildcards) | {"reference": "holdout"}


def setting_outputs(pattern, forget_sets=None, entry=None):
    """`pattern` filled in for every (forget set, method setting) pair.

    Restricted to `forget_sets` and to the settings of method entry `entry` when given.
    """
    return [
        pattern.format(forget_set=forget_set, method=s.entry, config_id=s.config_id)
        for s in sorted(SETTINGS, key=lambda s: (s.entry, s.config_id))
        for forget_set in s.forget_sets
        if (forget_sets is None or forget_set in forget_sets)
        and (entry is None or s.entry == entry)
    ]


def klom_files(wildcards=None):
    noise_floor = expand(rules.compute_noise_floor.output.klom, forget_set=FORGET_SETS)
    return noise_floor + setting_outputs(rules.compute_klom.output.klom)


def holdout_klom_files(wildcards=None):
    return setting_outputs(rules.compute_klom.output.holdout)


def unlearned_margin_files(wildcards=None):
    return setting_outputs(rules.gather_unlearned_margins.output.margins)


def unlearned_run_files(wildcards=None):
    return setting_outputs(rules.gather_unlearned_margins.output.runs)


def accuracy_logit_groups(forget_sets=None):
    """Logit shards per model group of the accuracy tables (top-1), keyed as
    klomflow.reporting.tables.group_key; published models have none (margin accuracy)."""
    forget_sets = FORGET_SETS if forget_sets is None else forget_sets
    groups = {}
    if SOURCE is None:
        groups["original"] = original_logit_shards(None)
    for forget_set in TRAINED_ORACLES:
        if forget_set in forget_sets:
            groups[f"oracle/{forget_set}"] = expand(
                rules.train_oracles.output.logits,
                forget_set=forget_set,
                shard=range(n_shards("oracle")),
            )
    for setting in SETTINGS:
        if reuses_original_margins(setting):
            continue
        for forget_set in setting.forget_sets:
            if forget_set in forget_sets:
                key = f"unlearned/{forget_set}/{setting.entry}/{setting.config_id}"
                groups[key] = expand(
                    rules.unlearn.output.logits,
                    forget_set=forget_set,
                    method=setting.entry,
                    config_id=setting.config_id,
                    shard=range(n_shards("original")),
                )
    # Sorted: a lookup table, and a rule's param, whose repr must not follow the config's order.
    return dict(sorted(groups.items()))


def accuracy_logit_files(forget_sets=None):
    return [
        path for paths in accuracy_logit_groups(forget_sets).values() for path in paths
    ]


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
    entry_settings(
        wildcards
    )  # an error naming the pair if the entry does not run there
    outputs = {
        "scored": rules.compute_klom.output.klom,
        "holdout": rules.compute_klom.output.holdout,
        "unlearned": rules.gather_unlearned_margins.output.margins,
    }
    return {
        name: setting_outputs(pattern, [wildcards.forget_set], wildcards.method)
        for name, pattern in outputs.items()
    }


def interval_params(wildcards):
    """What defines an interval file (rerun trigger)."""
    if wildcards.get("method", NOISE_FLOOR) == NOISE_FLOOR:
        config_ids, diagnostic = [NOISE_FLOOR_CONFIG_ID], False
    else:
        settings = entry_settings(wildcards)
        config_ids = [s.config_id for s in settings]
        diagnostic = REGISTRY[settings[0].implementation].diagnostic
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
        "paper_version": klomflow.reporting.selection.VERSION,
    }


def interval_files(wildcards=None):
    entries = expand(
        rules.resample_noise_floor.output.intervals, forget_set=FORGET_SETS
    )
    pairs = sorted({(f, s.entry) for s in SETTINGS for f in s.forget_sets})
    return entries + [
        rules.resample_klom.output.intervals.format(
            forget_set=forget_set, method=method
        )
        for forget_set, method in pairs
    ]


def class_forget_sets():
    """Sorted, not in the config's order: the class-accuracy rule's params list them."""
    return sorted(f for f in FORGET_SETS if config["forget_sets"][f]["kind"] == "class")


def oracle_checkpoints(wildcards=None):
    """Checkpoints of the oracles trained here (not of published ones)."""
    return expand(
        rules.train_oracles.output.checkpoint,
        forget_set=TRAINED_ORACLES,
        shard=range(n_shards("oracle")),
    )


def original_checkpoints(wildcards=None):
    """Checkpoints of the originals trained here (none when they are published)."""
    if SOURCE is not None:
        return []
    return expand(ORIGINAL_CHECKPOINT, shard=range(n_shards("original")))


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


# --- Unlearning jobs (rules/unlearn.smk) ---


import dataclasses


def job_setting(wildcards):
    """The MethodSetting an unlearning job runs, on the job's forget set only.

    An object, not a plain value: Snakemake leaves it out of the rerun check,
    which `unlearning_params` defines.
    """
    setting = method_setting(wildcards)
    return dataclasses.replace(setting, forget_sets=(wildcards.forget_set,))


# models.save_unlearned_checkpoints: the unlearned weights, a declared output.
UNLEARNED_CHECKPOINT = {
    "checkpoint": "results/models/unlearned/{forget_set}/{method}/{config_id}/shard_{shard}.pt"
}


# --- Privacy metrics (rules/privacy.smk) ---


from klomflow.metrics import privacy as privacy_module


def privacy_enabled():
    return bool(config["privacy"]["metrics"])


def privacy_params(wildcards):
    """What defines a per-point privacy file besides its inputs (rerun trigger)."""
    return {
        "identity": klom_params(wildcards)["identity"],
        "options": config["privacy"],
        "privacy_version": privacy_module.VERSION,
        # The scored oracles are the first n_oracles rows of the oracle logit shards.
        "n_scored": config["models"]["n_oracles"],
    }


def privacy_oracle_logits(wildcards):
    """The oracles' logit shards; none for published oracles (margin-based accuracy)."""
    if wildcards.forget_set in IMPORTED_ORACLES:
        return []
    return oracle_logit_shards(wildcards)


def privacy_files(wildcards=None):
    reference = expand(
        "results/privacy/{forget_set}/oracle_holdout/reference.parquet",
        forget_set=FORGET_SETS,
    )
    return reference + setting_outputs(
        "results/privacy/{forget_set}/{method}/{config_id}.parquet"
    )


def privacy_outputs():
    """The privacy tables and figures, for the `all` target (none when disabled)."""
    if not privacy_enabled():
        return []
    tables = expand(
        "results/tables/{name}", name=["privacy.parquet", "paper_privacy.md"]
    ) + expand("results/tables/paper_privacy.{extension}", extension=["tex", "parquet"])
    figures = expand(
        "results/report/{forget_set}/privacy_vs_klom.png", forget_set=FORGET_SETS
    )
    return tables + figures
