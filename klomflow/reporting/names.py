"""Names that tables, figures, rules and the config share."""

# Row name of the noise-floor reference: held-out oracles against the scored oracles, and
# its config_id. The only place these names are written (rules, scripts and modules import them).
NOISE_FLOOR = "oracle_holdout"
NOISE_FLOOR_CONFIG_ID = "reference"
