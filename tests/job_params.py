"""Print, as JSON, the params of every job the workflow plans for each config file given:
{config file: {job: params}}, each job's params as Snakemake records them for its rerun
check (`--rerun-triggers params`): the sorted repr() of each value.

Run as a script (Snakemake keeps global state per process):
    python tests/job_params.py SNAKEFILE FOLDER CONFIG [CONFIG ...]
Uses Snakemake's internals (the DAG and its persistence), pinned to Snakemake 9 by pyproject.
"""

import json
import sys
from pathlib import Path

from klomflow.jobs.budget import planned_workflow


def job_params(snakefile: Path, folder: Path, config_file: Path) -> dict:
    # forceall: every job, whatever exists in the folder.
    with planned_workflow(snakefile, folder, config_file, quiet=False) as workflow:
        return {
            f"{job.rule.name} {' '.join(sorted(job.output))}": workflow.persistence._params(job)
            for job in workflow.dag.jobs
        }


if __name__ == "__main__":
    snakefile, folder, *configs = (Path(argument).resolve() for argument in sys.argv[1:])
    result = {str(config): job_params(snakefile, folder, config) for config in configs}
    print("JOB_PARAMS " + json.dumps(result))
