from workflow_job import script_context

import numpy as np
import pandas as pd

from klomflow.io import load_array, save_array, save_parquet
from klomflow.jobs.published import do_nothing_runs, import_oracle_margins, import_original_margins
from klomflow.metrics.margins import margins_from_logits

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
labels = points["label"].to_numpy()
n_train = int((points["split"] == "train").sum())
wildcards = snakemake.wildcards
if "published" in snakemake.input.keys() and "scored" in snakemake.output.keys():
    # A published forget set's oracles (models.source): scored, then held out, by model id.
    scored, holdout = import_oracle_margins(
        config, wildcards.forget_set, labels, n_train, load_array(snakemake.input.original), log
    )
    margins = np.concatenate([scored, holdout])
elif "published" in snakemake.input.keys():
    margins = import_original_margins(config, labels, n_train, log)
elif "original" in snakemake.input.keys():
    # do_nothing on published originals: it changes nothing, so their margins are its margins.
    margins = load_array(snakemake.input.original)
    log(f"do_nothing: the {len(margins)} published originals' margins")
else:
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
    if "original" in snakemake.input.keys():
        runs = do_nothing_runs(len(margins), wildcards.forget_set, wildcards.method,
                               wildcards.config_id)
    else:
        runs = pd.concat([pd.read_parquet(path) for path in snakemake.input.runs])
    save_parquet(snakemake.output.runs, runs.reset_index(drop=True))
