from workflow_job import script_context

import numpy as np
import pandas as pd

from klomflow.io import load_array, save_torch
from klomflow.jobs.published import check_checkpoint_margins, import_original_shard
from klomflow.jobs.runs import dataset_for
from klomflow.training.loop import pick_device
from klomflow.training.published_models import load_published_model

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
n_train = int((points["split"] == "train").sum())
model_ids = snakemake.params.models
checkpoint = import_original_shard(config, model_ids, n_train, log)
# The shard's first model must reproduce its published margins from the dataset's
# inputs: this checks the normalisation and the key mapping on the real files.
device = pick_device()
dataset = dataset_for(config)
sample = np.linspace(0, len(points) - 1, num=min(256, len(points))).astype(np.int64)
first = checkpoint["models"][0]
worst = check_checkpoint_margins(
    load_published_model(first["source_file"]), dataset.eval_x[sample].to(device),
    load_array(snakemake.input.margins)[model_ids[0], sample], points["label"].to_numpy()[sample],
    device, first["source_file"])
log(f"model {model_ids[0]} reproduces its published margins on {len(sample)} points "
    f"(largest difference {worst:.2e})")
save_torch(snakemake.output.checkpoint, checkpoint)
log(f"wrote {len(checkpoint['models'])} published originals to {snakemake.output.checkpoint}")
