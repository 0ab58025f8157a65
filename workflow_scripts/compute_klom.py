from workflow_job import script_context

import pandas as pd

from klomflow.io import load_array, save_parquet
from klomflow.metrics.klom import KlomOptions
from klomflow.reporting.tables import klom_points

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
n_train = int((points["split"] == "train").sum())
n_val = int((points["split"] == "val").sum())  # triggered probes follow (docs/corrective.md)
unlearned = load_array(snakemake.input.unlearned)
forget_set = load_array(snakemake.input.forget_set)
# (oracle margins, the output and params named alike): against the scored oracles, and for a
# method setting also against the held-out ones (compute_noise_floor's held-out oracles are its
# unlearned side).
references = [("oracle", "klom")]
if "holdout" in snakemake.output.keys():
    references.append(("holdout_oracle", "holdout"))
for oracle, name in references:
    params = getattr(snakemake.params, name)
    frame, counts = klom_points(unlearned, load_array(getattr(snakemake.input, oracle)), forget_set,
                                n_train=n_train, options=KlomOptions(**params["klom_options"]),
                                n_val=n_val)
    save_parquet(getattr(snakemake.output, name), frame, params | {"counts": counts})
    log(f"{params['identity']} against the {params.get('reference', 'scored')} oracles: "
        f"{counts}; mean KLOM per split "
        f"{frame.groupby('split')['klom'].mean().round(3).to_dict()}")
