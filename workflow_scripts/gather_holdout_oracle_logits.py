import numpy as np
from workflow_job import script_context

from klomflow.io import load_array, save_array

log, config = script_context(snakemake)
# Shards are in seed order: the first n_scored models are the scored oracles.
logits = np.concatenate([load_array(path) for path in snakemake.input.logits])
holdout = logits[snakemake.params.n_scored :]  # [n_holdout, n_points, n_classes]
save_array(snakemake.output.logits, holdout)
log(f"logits of {len(holdout)} held-out oracles")
