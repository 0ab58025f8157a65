"""The config: the one layer that reads the raw config dict.

`load` and `validate` check a config against the schema (klomflow/config/schema.yaml,
unknown keys are errors) and against the data, fill in defaults and return the resolved
dict; the helpers turn it into the typed values the lower layers take (method settings,
model seeds, shards). The code is in klomflow/config/validation.py.
"""

from klomflow.config.validation import (
    DEFAULTS,
    NOMINAL_SIZES,
    RESERVED_ENTRY_NAMES,
    RESERVED_METHOD_KEYS,
    SCHEMA_PATH,
    ConfigError,
    MethodSetting,
    check_schema,
    check_source,
    in_schema_order,
    is_imported,
    load,
    method_settings,
    model_seed,
    model_seeds,
    n_models,
    seeds_per_job,
    shard_indices,
    stable_hash,
    subclasses,
    training_labels,
    training_seed,
    validate,
    with_defaults,
)

__all__ = [
    "DEFAULTS", "NOMINAL_SIZES", "RESERVED_ENTRY_NAMES", "RESERVED_METHOD_KEYS", "SCHEMA_PATH",
    "ConfigError", "MethodSetting", "check_schema", "check_source", "in_schema_order",
    "is_imported", "load", "method_settings", "model_seed", "model_seeds", "n_models",
    "seeds_per_job", "shard_indices", "stable_hash", "subclasses", "training_labels",
    "training_seed", "validate", "with_defaults",
]
