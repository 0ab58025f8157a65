from workflow_job import script_context

import pandas as pd
import torch

from klomflow.io import save_parquet
from klomflow.jobs.provenance import provenance

log, config = script_context(snakemake)
rows = []
for path in [*snakemake.input.original, *snakemake.input.oracle]:
    # mmap: only the small metadata is read, not every model's weights.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    for model in checkpoint["models"]:
        rows.append({"role": checkpoint["role"], "forget_set": checkpoint["forget_set"] or "",
                     "index": int(model["index"]), "seed": int(model["seed"]),
                     "train_seconds": float(model["train_seconds"]),
                     # True: its share of an ensemble's wall time; None: not recorded.
                     "train_seconds_amortised": model.get("train_seconds_amortised")})
# No rows when every model is imported from a published folder (no training time).
columns = ["role", "forget_set", "index", "seed", "train_seconds", "train_seconds_amortised"]
save_parquet(snakemake.output.table, pd.DataFrame(rows, columns=columns), provenance(config))
log(f"training seconds of {len(rows)} models")
