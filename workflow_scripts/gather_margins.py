import numpy as np
import pandas as pd
from workflow_job import script_context

from klomflow.io import load_array, save_array, save_parquet
from klomflow.margins import margins_from_logits

log, config = script_context(snakemake)
labels = pd.read_parquet(snakemake.input.points)["label"].to_numpy()
# Shards are listed in seed order, so rows come out in seed order.
margins = np.concatenate(
    [margins_from_logits(load_array(path), labels) for path in snakemake.input.logits]
)  # [n_models, n_points]
if "scored" in snakemake.output.keys():
    n_scored = snakemake.params.n_scored
    save_array(snakemake.output.scored, margins[:n_scored])
    save_array(snakemake.output.holdout, margins[n_scored:])
    log(f"{n_scored} scored and {len(margins) - n_scored} held-out oracle margins")
else:
    save_array(snakemake.output.margins, margins)
    log(f"margins of {len(margins)} models over {margins.shape[1]} points")
if "runs" in snakemake.output.keys():
    runs = pd.concat([pd.read_parquet(path) for path in snakemake.input.runs])
    save_parquet(snakemake.output.runs, runs.reset_index(drop=True))
