from workflow_job import script_context

from klomflow.datasets import points_table
from klomflow.io import save_parquet
from klomflow.runs import dataset_for

log, config = script_context(snakemake)
dataset = dataset_for(config)
points = points_table(dataset)
save_parquet(snakemake.output.points, points, {"dataset": config["dataset"],
                                               "n_train": dataset.n_train,
                                               "n_classes": dataset.n_classes})
log(f"{dataset.name}: {dataset.n_train} training and {len(dataset.val_y)} validation points, "
    f"{dataset.n_classes} classes")
