"""Run the workflow from tests: in a scratch folder, with a given config."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
SNAKEFILE = REPOSITORY / "Snakefile"


def tiny_config() -> dict:
    return yaml.safe_load((REPOSITORY / "tests" / "configs" / "tiny.yaml").read_text())


def reordered(value, order):
    """`value` with the keys of every mapping, at every depth, put in `order` (a function of
    the list of keys, e.g. sorted); lists keep their order, which means something in a config."""
    if isinstance(value, dict):
        return {key: reordered(value[key], order) for key in order(list(value))}
    if isinstance(value, list):
        return [reordered(item, order) for item in value]
    return value


def reversed_keys(keys: list) -> list:
    return keys[::-1]


def write_config(folder: Path, config: dict, name="config.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(copy.deepcopy(config), sort_keys=False))
    return path


def snakemake(folder: Path, *arguments, config_name="config.yaml", check=True, timeout=1800,
              environment=None):
    """Run snakemake on our Snakefile in `folder`; returns the CompletedProcess."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(folder), "--configfile", str(Path(folder) / config_name), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}"
                             f"\n{result.stderr[-8000:]}")
    return result


def planned_jobs(folder: Path, config_name="config.yaml", *targets) -> dict:
    """{rule: count} of the jobs a dry run (of `targets`, default all) would execute."""
    # Targets after an option of one value (--configfile and --quiet take several).
    cores = ("--cores", "1") if targets else ()
    result = snakemake(folder, "--dry-run", "--quiet", "rules", *cores, *targets,
                       config_name=config_name)
    return parse_job_stats(result.stdout + result.stderr)


def parse_job_stats(output: str) -> dict:
    """{rule: count} from the "Job stats" table Snakemake prints."""
    counts = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if match and match.group(1) != "total":
                counts[match.group(1)] = int(match.group(2))
            elif line.strip().startswith("total"):
                break
    return counts
