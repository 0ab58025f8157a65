# Config validation, and what every stage shares: the method settings, the forget sets, the
# published source, wildcard constraints and a few helpers. Each stage's input and params
# functions live in rules/functions/<stage>.smk, which its rules file includes (in a file of
# their own: `snakemake --lint` asks that rules and functions not share a file).
from snakemake.exceptions import WorkflowError

import klomflow.config
import klomflow.data.published.layout
from klomflow.io import shard_ranges
from klomflow.reporting.names import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID

# The config file(s) in use, for messages: --configfile replaces config.yaml.
CONFIG_FILES = ", ".join(
    str(path) for path in workflow.config_settings.configfiles or ["config.yaml"]
)

# Validate everything before any job is planned; the message names the file and key.
try:
    RESOLVED = klomflow.config.validate(config, base_dir=".")
    # Every method the config can name, the user's (user_methods) read without importing
    # them: their defaults, flags and versions (a user method's: its code's fingerprint).
    METHOD_SPECS = klomflow.config.method_specs(RESOLVED, base_dir=".")
except klomflow.config.ConfigError as error:
    raise WorkflowError(f"{CONFIG_FILES}: {error}") from None
# Scripts read the resolved config (defaults filled in) through snakemake.config.
config.update(RESOLVED)

SETTINGS = klomflow.config.method_settings(config, METHOD_SPECS)
SETTING_BY_ID = {(s.entry, s.config_id): s for s in SETTINGS}
FORGET_SETS = list(config["forget_sets"])
# A published folder (models.source) the originals, and the oracles of published
# forget sets, are read from instead of trained; None when everything trains here.
SOURCE = klomflow.data.published.layout.Source.from_setting(
    config["models"].get("source")
)
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


# Written by train_originals or, from a published folder, by import_originals.
ORIGINAL_CHECKPOINT = "results/models/original/shard_{shard}.pt"


def existing(paths):
    return [str(path) for path in paths if path.exists()]


def method_setting(wildcards):
    """The MethodSetting a job's wildcards name, or an error naming them."""
    key = (wildcards.method, wildcards.config_id)
    if key not in SETTING_BY_ID:
        raise WorkflowError(f"no method setting {key} in {CONFIG_FILES}")
    return SETTING_BY_ID[key]


def reuses_original_margins(setting):
    """do_nothing on published originals: their published margins, no job."""
    return SOURCE is not None and setting.implementation == "do_nothing"


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
