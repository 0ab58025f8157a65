"""Planning the DAG imports no torch: every SLURM job start plans it again."""

import os
import subprocess
import sys

from workflow import REPOSITORY, SNAKEFILE, tiny_config, write_config


def test_dry_run_plans_without_torch(tmp_path):
    # A `torch` that fails on import, first on the path: planning must never reach it.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('planning imported torch')\n")
    folder = tmp_path / "run"
    folder.mkdir()
    write_config(folder, tiny_config())
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(blocker), str(REPOSITORY), environment.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(folder), "--configfile", str(folder / "config.yaml"), "--dry-run"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "train_originals" in output and "unlearn" in output
    # The blocker works: importing torch through it fails.
    check = subprocess.run([sys.executable, "-c", "import torch"], env=environment,
                           capture_output=True, text=True)
    assert "planning imported torch" in check.stderr
