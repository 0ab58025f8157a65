import pandas as pd
from workflow_job import script_context

from klomflow.io import load_array, save_parquet
from klomflow.klom import KlomOptions
from klomflow.tables import klom_points

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
params = snakemake.params.klom
frame, counts = klom_points(
    load_array(snakemake.input.unlearned),
    load_array(snakemake.input.oracle),
    load_array(snakemake.input.forget_set),
    n_train=int((points["split"] == "train").sum()),
    options=KlomOptions(**params["klom_options"]),
)
save_parquet(snakemake.output.klom, frame, params | {"counts": counts})
log(f"{params['identity']}: {counts}; mean KLOM per split "
    f"{frame.groupby('split')['klom'].mean().round(3).to_dict()}")
