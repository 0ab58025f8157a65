from workflow_job import script_context

import numpy as np

from klomflow.io import load_array
from klomflow.training.datamodels import fit_datamodels_to_files

log, config = script_context(snakemake)
# Shards are listed in seed order; row m of the masks goes with row m of the logits.
masks = np.concatenate([load_array(path) for path in snakemake.input.masks])
logits = np.concatenate([load_array(path) for path in snakemake.input.logits])
ridge = snakemake.params.fit["ridge"]
fit_datamodels_to_files(
    masks, logits, ridge, snakemake.output.datamodels, snakemake.output.intercept
)
log(
    f"datamodels of {masks.shape[1]} training points on {logits.shape[1]} points from "
    f"{len(masks)} subset models (ridge {ridge})"
)
