"""The default config's KLOM landscape has the published CIFAR-10 shape.

Runs the default config (100 models per side) with do_nothing and
oracle_matching only, the settings these claims are about: the noise floor,
a do_nothing far above it on the forget split only, and a method in between.
The expected figures are docs/methods.md's ("Measured on the default dataset");
the tolerances catch a regression of them, not only of the shape.
"""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow import REPOSITORY, snakemake, write_config

pytestmark = pytest.mark.slow

RANDOM_SET = "random_60"
# Same-distribution simulation at N = 100 (KLOM.md): p95 0.66. The random set's forget
# split has only 60 points, so its p95 is noisier: measured 0.49 and 0.64 in two runs
# whose models differed only in float summation order (sequential and ensemble training).
FLOOR, FLOOR_TOLERANCE = 0.66, 0.1
RANDOM_FORGET_FLOOR, RANDOM_FORGET_TOLERANCE = 0.66, 0.2
# docs/methods.md's figures for random_60, KLOM p95 on the forget split.
EXPECTED_DO_NOTHING_FORGET = 4.78
EXPECTED_ORACLE_MATCHING_FORGET = 1.42


@pytest.fixture(scope="module")
def default_tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("default")
    config = yaml.safe_load((REPOSITORY / "config.yaml").read_text())
    config["methods"] = {name: config["methods"][name]
                         for name in ("do_nothing", "oracle_matching")}
    write_config(folder, config)
    snakemake(folder, "--cores", "2")
    table = pd.read_parquet(Path(folder) / "results/tables/klom.parquet")
    print((Path(folder) / "results/tables/klom_summary.md").read_text())
    return table.set_index(["forget_set", "method", "split"])


def test_retrain_against_retrain_sits_at_the_noise_floor(default_tables):
    p95 = default_tables["klom_p95"]
    assert p95[RANDOM_SET, "oracle_holdout", "forget"] == pytest.approx(
        RANDOM_FORGET_FLOOR, abs=RANDOM_FORGET_TOLERANCE)
    for forget_set, split in [(RANDOM_SET, "retain"), (RANDOM_SET, "val"), ("class_3", "forget"),
                              ("class_3", "retain"), ("class_3", "val")]:
        assert p95[forget_set, "oracle_holdout", split] == pytest.approx(
            FLOOR, abs=FLOOR_TOLERANCE)


def test_the_random_set_has_the_published_shape(default_tables):
    """do_nothing >= 5x the floor on forget, <= 2x on retain and val; a method in between."""
    p95 = default_tables["klom_p95"]
    floor = {split: p95[RANDOM_SET, "oracle_holdout", split]
             for split in ("forget", "retain", "val")}
    nothing = {split: p95[RANDOM_SET, "do_nothing", split] for split in floor}
    assert nothing["forget"] >= 5 * floor["forget"]
    assert nothing["retain"] <= 2 * floor["retain"]
    assert nothing["val"] <= 2 * floor["val"]
    matching = p95[RANDOM_SET, "oracle_matching", "forget"]
    assert floor["forget"] < matching < nothing["forget"]
    # docs/methods.md's figures.
    assert nothing["forget"] == pytest.approx(EXPECTED_DO_NOTHING_FORGET, rel=0.15)
    assert matching == pytest.approx(EXPECTED_ORACLE_MATCHING_FORGET, rel=0.25)


def test_the_diagnostic_says_why(default_tables):
    # Retain and val margins move by a fraction of a seed std, forget margins by more.
    shift = default_tables["median_shift_over_std"]
    assert shift[RANDOM_SET, "do_nothing", "forget"] > shift[RANDOM_SET, "do_nothing", "retain"]
    assert shift[RANDOM_SET, "do_nothing", "retain"] < 0.5
    assert shift[RANDOM_SET, "oracle_holdout", "retain"] < 0.3


def test_doing_nothing_saturates_the_class_set(default_tables):
    p95 = default_tables["klom_p95"]
    # As on CIFAR-10: a retrained model never predicts the forgotten class.
    assert p95["class_3", "do_nothing", "forget"] > 10 * p95["class_3", "oracle_holdout",
                                                             "forget"]
