# Params functions of rules/klom.smk.
import json

from klomflow.metrics import klom as klom_module
from klomflow.reporting.names import NOISE_FLOOR, NOISE_FLOOR_CONFIG_ID


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
            "diagnostic": METHOD_SPECS[setting.implementation].diagnostic,
        }
    return {
        "identity": identity,
        "klom_options": config["klom"],
        "klom_version": klom_module.VERSION,
    }


def holdout_klom_params(wildcards):
    """KLOM against the held-out oracles: the selection criterion (klomflow/reporting/selection.py)."""
    return klom_params(wildcards) | {"reference": "holdout"}
