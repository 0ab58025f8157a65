from workflow_job import script_context

from pathlib import Path

from klomflow.data.datasets import DownloadError, download

log, config = script_context(snakemake)
dataset = config["dataset"]
log(f"downloading {dataset['name']} into {dataset['data_dir']}")
try:
    download(dataset["name"], dataset["data_dir"])
except DownloadError as error:
    # The message says what failed and where to put the files by hand: no traceback.
    log(f"ERROR: {error}")
    raise SystemExit(f"download_data: {error}") from None
Path(snakemake.output.marker).write_text("downloaded by klomflow\n")
log("done")
