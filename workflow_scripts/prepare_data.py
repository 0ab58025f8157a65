from workflow_job import script_context

from klomflow.data.datasets import points_table, points_without_dataset
from klomflow.data.published.layout import Source
from klomflow.io import save_parquet
from klomflow.jobs.published import labels_from_model_zero
from klomflow.jobs.runs import dataset_for

log, config = script_context(snakemake)
source = Source.from_setting(config["models"].get("source"))
try:
    dataset = dataset_for(config)
except FileNotFoundError as error:
    if source is None:
        raise
    # Scoring published margins needs no image: the labels follow from model 0's
    # logits and margins (unlearning methods other than do_nothing need the files).
    log(f"WARNING: {error}; labels recovered from the {source.layout} folder's model 0")
    labels, n_train = labels_from_model_zero(source, log)
    points = points_without_dataset(labels, n_train)
    metadata = {"n_train": n_train, "n_classes": int(labels.max()) + 1, "labels_from": "published"}
else:
    points = points_table(dataset)
    metadata = {"n_train": dataset.n_train, "n_classes": dataset.n_classes}
save_parquet(snakemake.output.points, points, {"dataset": config["dataset"]} | metadata)
log(f"{config['dataset']['name']}: {metadata['n_train']} training and "
    f"{len(points) - metadata['n_train']} validation points, {metadata['n_classes']} classes")
