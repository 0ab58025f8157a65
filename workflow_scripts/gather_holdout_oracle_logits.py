from workflow_job import script_context

import numpy as np
import pandas as pd

from klomflow.io import load_array, save_array
from klomflow.jobs.published import import_holdout_oracle_logits

log, config = script_context(snakemake)
if "published" in snakemake.input.keys():  # a published forget set's oracles (models.source)
    points = pd.read_parquet(snakemake.input.points)
    n_train = int((points["split"] == "train").sum())
    holdout = import_holdout_oracle_logits(config, snakemake.wildcards.forget_set, n_train,
                                           len(points) - n_train, log)
else:
    # Shards are in seed order: the first n_scored models are the scored oracles.
    logits = np.concatenate([load_array(path) for path in snakemake.input.logits])
    holdout = logits[snakemake.params.n_scored :]  # [n_holdout, n_points, n_classes]
save_array(snakemake.output.logits, holdout)
log(f"logits of {len(holdout)} held-out oracles")
