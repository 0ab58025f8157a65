"""Per-point KLOM files, their summary rows and the KLOM summary, on margins made up here."""

import json

import numpy as np
import pandas as pd
import pytest

from klomflow.metrics.klom import KlomOptions, klom_per_point
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.render import klom_latex, klom_markdown
from klomflow.reporting.selection import klom_table_frame
from klomflow.reporting.summary import summary_markdown
from klomflow.reporting.tables import (
    klom_points,
    klom_table,
    point_splits,
    with_unchanged_weights,
)

OPTIONS = KlomOptions(bins=10)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_one_diverged_model_is_left_out_of_klom(numpy_rng, bad_value):
    """A setting with one NaN (or infinite) run among finite ones scores the finite ones."""
    n_train, n_val = 30, 10
    unlearned = numpy_rng.normal(1.0, 1.0, size=(6, n_train + n_val))
    oracle = numpy_rng.normal(0.0, 1.0, size=(5, n_train + n_val))
    unlearned[2, 7] = bad_value  # one value is enough to make the whole run diverged
    forget = np.array([1, 7, 20])
    frame, counts = klom_points(unlearned, oracle, forget, n_train, OPTIONS)
    assert counts == {"n_unlearned": 5, "n_oracle": 5, "n_diverged": 1}
    finite_rows = np.delete(unlearned, 2, axis=0)
    np.testing.assert_array_equal(frame["klom"].to_numpy(),
                                  klom_per_point(finite_rows, oracle, OPTIONS))
    assert np.isfinite(frame["klom"]).all()
    assert list(frame.loc[frame["split"] == "forget", "point"]) == forget.tolist()


# --- what a reader of klom_summary.md and paper_klom.{md,tex} sees about each setting ----------

N_TRAIN, N_VAL, N_MODELS = 12, 4, 3
FORGET = np.arange(3)
GRID_CONFIG = {
    "forget_sets": {"random_3": {"kind": "random", "size": 3}},
    "methods": {
        "do_nothing": None,
        "gradient_ascent": {"lr": [0.001, 0.01], "epochs": 3},  # epochs at its default
        "ssd": {"alpha": [10.0, 100.0]},
        "oracle_matching": {"batch_size": 64, "lr": 2.0e-3},
        "dm_direct": None,
    },
}


def setting_entries(setting, klom):
    """The scored and held-out per-point KLOM entries of one setting, as compute_klom writes."""
    from klomflow.unlearning.methods.registry import REGISTRY

    points = pd.DataFrame({"point": np.arange(N_TRAIN + N_VAL),
                           "split": pd.Series(point_splits(N_TRAIN, N_VAL, FORGET),
                                              dtype="string"),
                           "klom": np.full(N_TRAIN + N_VAL, float(klom))})
    identity = {"dataset": "digits", "model": "mlp", "forget_set": "random_3",
                "method": setting.entry, "config_id": setting.config_id,
                "implementation": setting.implementation,
                "params": json.dumps(setting.params, sort_keys=True),
                "diagnostic": setting.implementation in REGISTRY
                and REGISTRY[setting.implementation].diagnostic}
    metadata = {"identity": identity, "klom_options": vars(KlomOptions()),
                "counts": {"n_unlearned": N_MODELS, "n_oracle": N_MODELS, "n_diverged": 0}}
    return [(points, metadata), (points, metadata | {"reference": "holdout"})]


def runs_table(setting, changed):
    return pd.DataFrame({"forget_set": "random_3", "method": setting.entry,
                         "config_id": setting.config_id, "index": np.arange(N_MODELS),
                         "changed_weights": changed})


@pytest.fixture
def grid_table():
    """klom.parquet over GRID_CONFIG as reduce_klom builds it, with the unlearning runs:
    ssd at alpha 100 changed no weight of any model, at alpha 10 none of one model;
    do_nothing and dm_direct (logits, not weights) change none by design."""
    from klomflow.config import MethodSetting, method_settings

    settings = {(s.entry, s.params.get("lr"), s.params.get("alpha")): s
                for s in method_settings(GRID_CONFIG)}
    by_name = {"ascent_small": settings["gradient_ascent", 0.001, None],
               "ascent_large": settings["gradient_ascent", 0.01, None],
               "ssd_low": settings["ssd", None, 10.0], "ssd_high": settings["ssd", None, 100.0],
               "matching": settings["oracle_matching", 0.002, None],
               "nothing": settings["do_nothing", None, None],
               "direct": settings["dm_direct", None, None]}
    changed = {"ascent_small": [5, 7, 9], "ascent_large": [5, 7, 9], "ssd_low": [0, 3, 1],
               "ssd_high": [0, 0, 0], "matching": [4, 4, 4], "nothing": [0, 0, 0],
               "direct": [0, 0, 0]}
    # ssd at alpha 100 is the best setting by held-out KLOM, so the paper tables report it.
    klom = {"ascent_small": 2.0, "ascent_large": 3.0, "ssd_low": 2.5, "ssd_high": 1.5,
            "matching": 0.5, "nothing": 4.0, "direct": 3.5}
    entries = [entry for name, setting in by_name.items()
               for entry in setting_entries(setting, klom[name])]
    noise_floor = setting_entries(MethodSetting(NOISE_FLOOR, NOISE_FLOOR, {}, "reference", ()),
                                  1.0)[0]
    noise_floor[1]["identity"]["diagnostic"] = False
    entries.append(noise_floor)
    table = klom_table(entries)
    table = with_unchanged_weights(table, [runs_table(by_name[name], changed[name])
                                           for name in by_name])
    return table, by_name


def summary_row(text, method, config_id):
    """The cells of a setting's row of the KLOM table (not of the list of settings)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {method}")
            and f"| {config_id} |" in line and "`{" not in line]
    assert len(rows) == 1, (method, config_id, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_summary_names_each_grid_setting_by_its_hyperparameters(grid_table):
    table, settings = grid_table
    text = summary_markdown(table)
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    column = columns.index("hyperparameters")
    # The grid's axis tells gradient_ascent's settings apart, also where it is the default
    # (lr 0.01); epochs (3) is the default and the same in both, so it is not repeated.
    small, large = settings["ascent_small"], settings["ascent_large"]
    assert summary_row(text, "gradient_ascent", small.config_id)[column] == "lr=0.001"
    assert summary_row(text, "gradient_ascent", large.config_id)[column] == "lr=0.01"
    assert summary_row(text, "ssd", settings["ssd_high"].config_id)[column] == "alpha=100.0"
    # Set away from the defaults (batch_size 512, lr 5e-4) without a grid.
    matching = settings["matching"]
    assert (summary_row(text, "oracle_matching †", matching.config_id)[column]
            == "batch_size=64, lr=0.002")
    assert summary_row(text, "do_nothing", settings["nothing"].config_id)[column] == "defaults"
    # Every hyperparameter of each setting is listed once, by config_id.
    for setting in settings.values():
        listed = [line for line in text.splitlines()
                  if line.startswith(f"| {setting.entry} | {setting.config_id} |")
                  and "`{" in line]
        assert len(listed) == 1
        assert json.loads(listed[0].split("`")[1]) == setting.params


def test_summary_marks_the_diagnostic_as_the_paper_tables_do(grid_table):
    table, settings = grid_table
    text = summary_markdown(table)
    matching = settings["matching"].config_id
    assert summary_row(text, "oracle_matching †", matching)[0] == "oracle_matching †"
    assert "† diagnostic: uses oracles" in text
    for name in ("ascent_small", "ssd_low", "nothing"):
        setting = settings[name]
        assert "†" not in summary_row(text, setting.entry, setting.config_id)[0]
    # Diagnostics come after the competitors, as in the paper tables.
    order = [line.split("|")[1].strip() for line in text.splitlines()
             if line.startswith("| ") and not line.startswith(("| method", "|---"))]
    assert order.index("oracle_matching †") > max(order.index(name) for name in
                                                   ("gradient_ascent", "ssd", "dm_direct"))


def test_a_setting_that_changed_no_weights_is_flagged_in_the_tables(grid_table):
    table, settings = grid_table
    unchanged = table.drop_duplicates(["method", "config_id"]).set_index("config_id")[
        "n_unchanged"]
    # Counted from the runs tables: models whose changed_weights is 0.
    assert unchanged[settings["ssd_high"].config_id] == 3
    assert unchanged[settings["ssd_low"].config_id] == 1
    assert unchanged[settings["ascent_small"].config_id] == 0
    # Nothing to flag: do_nothing by design, dm_direct's answer is logits, the noise floor.
    for name in ("nothing", "direct"):
        assert np.isnan(unchanged[settings[name].config_id])
    assert np.isnan(unchanged["reference"])
    text = summary_markdown(table)
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    column = [cell.strip() for cell in header.strip("|").split("|")].index("n_unchanged")
    assert summary_row(text, "ssd", settings["ssd_high"].config_id)[column] == "3"
    assert summary_row(text, "do_nothing", settings["nothing"].config_id)[column] == "–"
    flags = [line for line in text.splitlines() if line.startswith("- **Unchanged:**")]
    assert len(flags) == 2
    assert any(f"ssd {settings['ssd_high'].config_id} (alpha=100.0) on random_3 changed no "
               "weight of 3 of its 3 models" in flag for flag in flags)
    assert any(f"ssd {settings['ssd_low'].config_id} (alpha=10.0) on random_3 changed no "
               "weight of 1 of its 3 models" in flag for flag in flags)

    # The paper tables report the selected setting (ssd at alpha 100): they carry the flag.
    intervals = pd.concat([paper_intervals(table, method) for method in table["method"].unique()],
                          ignore_index=True)
    frame = klom_table_frame(table, intervals)
    for text in (klom_markdown(frame, table), klom_latex(frame, table)):
        assert f"ssd {settings['ssd_high'].config_id} (alpha=100.0)" in text.replace("\\_", "_")
        assert "changed no weight of 3 of its 3 models" in text
        assert settings["ssd_low"].config_id not in text  # not selected: not in these tables


def paper_intervals(table, method):
    """An interval file's rows for the setting klom.parquet selects, with made-up figures."""
    from klomflow.reporting.selection import STATISTICS

    chosen = table[(table["method"] == method) & table["selected"]].iloc[0]
    return pd.DataFrame([
        {"forget_set": "random_3", "method": method, "config_id": chosen["config_id"],
         "diagnostic": bool(chosen["diagnostic"]), "selected_by": chosen["selected_by"],
         "holdout_average_95": chosen["holdout_average_95"], "n_settings": 1,
         "statistic": statistic, "estimate": 1.0, "low": 0.5, "high": 1.5,
         "standard_error": 0.1, "resampled_mean": 1.1, "interval": "jackknife",
         "n_resamples": 10, "deleted_fraction": 0.5, "seed": 1, "n_unlearned": N_MODELS,
         "n_oracle": N_MODELS}
        for statistic in STATISTICS])
