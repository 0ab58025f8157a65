from workflow_job import script_context

from pathlib import Path

from klomflow.datasets import download

log, config = script_context(snakemake)
dataset = config["dataset"]
log(f"downloading {dataset['name']} into {dataset['data_dir']}")
download(dataset["name"], dataset["data_dir"])
Path(snakemake.output.marker).write_text("downloaded by klomflow\n")
log("done")
