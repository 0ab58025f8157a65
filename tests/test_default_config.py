"""The default config's models behave as KLOM says they must.

Runs the default config (100 models per side) with only do_nothing, which is
the part these claims are about: a few minutes on 2 cores.
"""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow import REPOSITORY, snakemake, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("default")
    config = yaml.safe_load((REPOSITORY / "config.yaml").read_text())
    config["methods"] = {"do_nothing": None}
    write_config(folder, config)
    snakemake(folder, "--cores", "2")
    table = pd.read_parquet(Path(folder) / "results/tables/klom.parquet")
    print((Path(folder) / "results/tables/klom_summary.md").read_text())
    return table.set_index(["forget_set", "method", "split"])["klom_p95"]


def test_retrain_against_retrain_sits_at_the_noise_floor(default_tables):
    # Same-distribution simulation at N = 100 (KLOM.md): p95 0.66.
    for forget_set in ("random_100", "class_3"):
        for split in ("forget", "retain", "val"):
            assert 0.4 < default_tables[forget_set, "oracle_holdout", split] < 1.0


@pytest.mark.parametrize("forget_set", ["random_100", "class_3"])
def test_doing_nothing_scores_high_on_the_forget_split(default_tables, forget_set):
    floor = default_tables[forget_set, "oracle_holdout", "forget"]
    assert default_tables[forget_set, "do_nothing", "forget"] > 5 * floor
