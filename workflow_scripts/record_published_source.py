from workflow_job import script_context

import json

from klomflow.io import atomic_path
from klomflow.jobs.published import source_manifest

log, config = script_context(snakemake)
manifest = source_manifest(snakemake.input.published, snakemake.params.source["path"])
with atomic_path(snakemake.output.manifest) as temporary:
    temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
log(f"SHA-256 of {len(manifest)} files of {snakemake.params.source}")
