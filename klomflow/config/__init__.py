"""The config: the one layer that reads the raw config dict.

`load` and `validate` check a config against the schema (klomflow/config/schema.yaml,
unknown keys are errors) and against the data, fill in defaults and return the resolved
dict; the helpers turn it into the typed values the lower layers take (method settings,
model seeds, shards). The code is in validation.py (schema, data checks, defaults) and
settings.py (typed values).
"""

from klomflow.config.settings import (
    RESERVED_ENTRY_NAMES,
    RESERVED_METHOD_KEYS,
    USER_METHOD_SOURCES,
    ConfigError,
    MethodSetting,
    is_imported,
    method_settings,
    method_specs,
    model_seeds,
    n_models,
    seeds_per_job,
    shard_indices,
    training_seed,
)
from klomflow.config.validation import (
    DEFAULT_CONFIG_PATH,
    DEFAULTS,
    NOMINAL_SIZES,
    SCHEMA_PATH,
    check_schema,
    check_source,
    in_schema_order,
    load,
    subclasses,
    training_labels,
    validate,
    with_default_sections,
    with_defaults,
)
from klomflow.seeds import model_seed, stable_hash

__all__ = [
    "DEFAULT_CONFIG_PATH", "with_default_sections",
    "DEFAULTS", "NOMINAL_SIZES", "RESERVED_ENTRY_NAMES", "RESERVED_METHOD_KEYS", "SCHEMA_PATH",
    "USER_METHOD_SOURCES", "ConfigError", "MethodSetting", "check_schema", "check_source",
    "in_schema_order", "is_imported", "load", "method_settings", "method_specs", "model_seed",
    "model_seeds", "n_models",
    "seeds_per_job", "shard_indices", "stable_hash", "subclasses", "training_labels",
    "training_seed", "validate", "with_defaults",
]
