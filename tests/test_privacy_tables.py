"""The privacy workflow scripts on small files (no Snakemake run): which accuracy definition the
competition's ratios use, the reference row's number of models, and the worst-case proxy flag
on every table row, the paper table and the figure."""

import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp
from workflow import tiny_config

from klomflow.config import with_defaults
from klomflow.io import read_parquet_metadata, save_array
from klomflow.job_server import SOCKET_VARIABLE
from klomflow.reporting import privacy_tables
from klomflow.reporting.tables import with_forget_set_kinds

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow_scripts"
N_TRAIN, N_VAL, N_CLASSES = 12, 6, 3
FORGET = np.array([0, 3, 7])
OPTIONS = {"metrics": ["competition", "ulira", "lira"], "max_points": 1000, "subset_seed": 0}


def margins_of(logits, labels):
    """The margin of every model and point: z_y - logsumexp of the other logits."""
    picked = np.take_along_axis(logits, labels[None, :, None], axis=2)[..., 0]
    others = np.where(np.arange(logits.shape[2]) == labels[:, None], -np.inf, logits)
    return picked - logsumexp(others, axis=2)


def model_logits(rng, n_models, correct_but_negative):
    """Logits whose argmax is the label with a positive margin where `correct_but_negative` is
    False, and (2, 1.5, 1.5)-shaped (right by argmax, margin -0.19) where it is True."""
    labels = np.arange(N_TRAIN + N_VAL) % N_CLASSES
    logits = rng.normal(0, 0.1, (n_models, len(labels), N_CLASSES))
    logits[:, np.arange(len(labels)), labels] += 4.0
    tie = np.full(N_CLASSES, 1.5)
    for model, point in zip(*np.nonzero(correct_but_negative)):
        logits[model, point] = tie
        logits[model, point, labels[point]] = 2.0
    return logits, labels


def run_privacy_script(folder, rule, tested_logits, oracle_logits, n_scored, original_logits,
                       n_methods, monkeypatch, with_tested_logits=True, with_oracle_logits=True):
    """Write the inputs compute_privacy.py reads and run it as Snakemake would; returns the
    forget row and the log text. oracle_logits holds the scored oracles, then the held-out."""
    folder = Path(folder)
    labels = np.arange(N_TRAIN + N_VAL) % N_CLASSES
    pd.DataFrame({"split": ["train"] * N_TRAIN + ["val"] * N_VAL, "label": labels}).to_parquet(
        folder / "points.parquet")
    save_array(folder / "forget.npy", FORGET)
    reference = rule == "compute_privacy_reference"
    tested = oracle_logits[n_scored:] if reference else tested_logits
    arrays = {"tested": margins_of(tested, labels),
              "oracle": margins_of(oracle_logits[:n_scored], labels),
              "original": margins_of(original_logits[:n_methods], labels),
              "tested_logits": tested_logits, "oracle_logits": oracle_logits}
    for name, array in arrays.items():
        if array is not None:
            save_array(folder / f"{name}.npy", array)
    tested_shards = [str(folder / ("oracle_logits.npy" if reference else "tested_logits.npy"))]
    oracle_shards = [str(folder / "oracle_logits.npy")]
    snakemake = SimpleNamespace(
        input=SimpleNamespace(
            tested=str(folder / "tested.npy"), oracle=str(folder / "oracle.npy"),
            original=str(folder / "original.npy"), forget_set=str(folder / "forget.npy"),
            points=str(folder / "points.parquet"),
            tested_logits=tested_shards if with_tested_logits else [],
            oracle_logits=oracle_shards if with_oracle_logits else []),
        output=SimpleNamespace(points=str(folder / "out.parquet")),
        params=SimpleNamespace(privacy={
            "identity": {"forget_set": "f", "method": "m", "config_id": "c"},
            "options": OPTIONS, "privacy_version": "test", "n_scored": n_scored}),
        rule=rule, threads=1, log=[str(folder / "job.log")], config={}, wildcards={})
    monkeypatch.setenv(SOCKET_VARIABLE, "off")
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / "compute_privacy.py"), init_globals={"snakemake": snakemake})
    rows = read_parquet_metadata(folder / "out.parquet")["rows"]
    return next(r for r in rows if r["split"] == "forget"), (folder / "job.log").read_text()


def margin_accuracy(logits, labels, split):
    splits = np.array(["retain"] * N_TRAIN + ["val"] * N_VAL, dtype=object)
    splits[FORGET] = "forget"
    return float((margins_of(logits, labels)[:, splits == split] > 0).mean())


def test_published_oracles_without_logits_put_both_sides_on_margins(tmp_path, monkeypatch):
    """With oracle logits missing (published oracles), the ratio is margin over margin and says
    so; top-1 of the method over the oracles' margin lower bound would inflate it."""
    rng = np.random.default_rng(0)
    flagged = np.zeros((5, N_TRAIN + N_VAL), dtype=bool)
    flagged[:, [1, 2, 4, 13]] = True  # right by argmax, margin < 0, in retain and val
    tested, labels = model_logits(rng, 5, flagged)
    oracle, _ = model_logits(rng, 10, np.zeros((10, N_TRAIN + N_VAL), dtype=bool))
    forget, log = run_privacy_script(tmp_path, "compute_privacy", tested, oracle, 5, oracle, 5,
                                     monkeypatch, with_oracle_logits=False)
    assert forget["competition_accuracy_definition"] == "margin_positive"
    for split in ("retain", "val"):
        expected = (margin_accuracy(tested, labels, split)
                    / margin_accuracy(oracle[:5], labels, split))
        assert expected < 1  # the flagged points count as wrong by margin
        assert forget[f"competition_{split}_accuracy_ratio"] == pytest.approx(expected, abs=1e-12)
    assert "margin > 0 on both sides" in log and "the oracles have no logits" in log


def test_with_logits_on_both_sides_the_ratio_is_top1(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    flagged = np.zeros((5, N_TRAIN + N_VAL), dtype=bool)
    flagged[:, [1, 2, 4, 13]] = True
    tested, _ = model_logits(rng, 5, flagged)
    oracle, _ = model_logits(rng, 10, np.zeros((10, N_TRAIN + N_VAL), dtype=bool))
    forget, _ = run_privacy_script(tmp_path, "compute_privacy", tested, oracle, 5, oracle, 5,
                                   monkeypatch)
    assert forget["competition_accuracy_definition"] == "top1"
    assert forget["competition_retain_accuracy_ratio"] == 1.0
    assert forget["competition_val_accuracy_ratio"] == 1.0


@pytest.mark.parametrize("n_holdout", [9, 4])
def test_reference_row_uses_the_methods_number_of_models(tmp_path, monkeypatch, n_holdout):
    """n_originals = 6 models per method: 9 held-out oracles give a reference row of the first
    6 (max eps ceil(ln 5) = 2, as a method's); 4 give all 4 and a warning naming the scales."""
    rng = np.random.default_rng(2)
    no_ties = np.zeros((20, N_TRAIN + N_VAL), dtype=bool)
    oracles, labels = model_logits(rng, 6 + n_holdout, no_ties[:6 + n_holdout])
    originals, _ = model_logits(rng, 6, no_ties[:6])
    # Held-out oracle 6 onwards get another accuracy, so that using them would show.
    oracles[6 + 6:, :, :] = -oracles[6 + 6:, :, :]
    forget, log = run_privacy_script(tmp_path, "compute_privacy_reference", None, oracles, 6,
                                     originals, 6, monkeypatch)
    used = min(n_holdout, 6)
    assert forget["n_unlearned"] == used
    assert forget["competition_max_epsilon"] == math.ceil(math.log(used - 1))
    assert forget["competition_retain_accuracy_ratio"] == 1.0  # top-1 of the rows used
    assert forget["ulira_n_positive"] == used * len(FORGET)
    assert ("WARNING: 4 held-out oracles against 6 models per method" in log) == (n_holdout < 6)


# --- the worst-case proxy flag ------------------------------------------------------------------

FORGET_SETS = {"random_a": {"kind": "random", "size": 10, "seed": 0},
               "worst": {"kind": "worst_case", "size": 10, "proxy": "inout_klom"}}


def privacy_entries():
    """Per-point files' metadata of two forget sets: the reference and one method each."""
    entries = []
    for forget_set in FORGET_SETS:
        for method, config_id in (("oracle_holdout", "reference"), ("ssd", "abc")):
            rows = [{"dataset": "digits", "model": "mlp", "forget_set": forget_set,
                     "method": method, "config_id": config_id, "diagnostic": False,
                     "split": split, "n_oracle": 10, "competition_forget_quality": 0.2,
                     "competition_score": 0.2, "ulira_auc": 0.5, "lira_auc": 0.5,
                     "ulira_folds": 5}
                    for split in ("forget", "retain", "val")]
            entries.append({"rows": rows, "options": {"metrics": ["competition", "ulira",
                                                                  "lira"]}})
    return entries


def klom_selection(with_kinds=False):
    rows = [{"forget_set": f, "method": m, "config_id": c, "diagnostic": False,
             "split": "forget", "selected": True, "klom_p95": 1.0}
            for f in FORGET_SETS for m, c in (("oracle_holdout", "reference"), ("ssd", "abc"))]
    table = pd.DataFrame(rows)
    if with_kinds:
        table = with_forget_set_kinds(table, FORGET_SETS)
    return table


def test_every_privacy_row_of_a_worst_case_set_says_proxy():
    table = privacy_tables.privacy_table(privacy_entries(), FORGET_SETS)
    worst = table[table["forget_set"] == "worst"]
    assert len(worst) == 6 and (worst["forget_set_proxy"] == "inout_klom").all()
    assert (worst["forget_set_kind"] == "worst_case").all()
    other = table[table["forget_set"] == "random_a"]
    assert other["forget_set_proxy"].isna().all() and (other["forget_set_kind"] == "random").all()
    # The paper table keeps the flag, from privacy.parquet or (older files) from klom.parquet.
    for privacy_frame, klom in ((table, klom_selection()),
                                (table.drop(columns=["forget_set_kind", "forget_set_proxy"]),
                                 klom_selection(with_kinds=True))):
        frame = privacy_tables.paper_privacy_frame(privacy_frame, klom)
        flags = dict(zip(frame["forget_set"], frame["forget_set_proxy"]))
        assert flags["worst"] == "inout_klom" and pd.isna(flags["random_a"])
        assert (frame.loc[frame["forget_set"] == "worst", "forget_set_proxy"]
                == "inout_klom").all()


def test_paper_privacy_table_and_figure_name_the_proxy():
    table = privacy_tables.privacy_table(privacy_entries(), FORGET_SETS)
    frame = privacy_tables.paper_privacy_frame(table, klom_selection())
    markdown = privacy_tables.privacy_markdown(frame)
    assert "Worst-case proxy forget sets: worst (inout_klom)." in markdown
    assert "| worst (proxy) F |" in markdown and "| random_a F |" in markdown
    latex = privacy_tables.privacy_latex(frame)
    assert "{worst (proxy)}" in latex and "{random\\_a}" in latex
    assert "% Worst-case proxy forget sets: worst (inout\\_klom)." in latex
    title = privacy_tables.privacy_figure(frame, "worst")._suptitle.get_text()
    assert "worst-case proxy set (inout_klom)" in title
    assert "proxy" not in privacy_tables.privacy_figure(frame, "random_a")._suptitle.get_text()


class Namespace(dict):
    """Snakemake's named lists: items by attribute and by get()."""

    __getattr__ = dict.__getitem__


def test_klom_interval_rows_of_a_worst_case_set_say_proxy(tmp_path, monkeypatch):
    """results/intervals/{forget_set}/{method}.parquet (and so paper_klom.parquet) carry
    forget_set_kind and forget_set_proxy on every row, as klom.parquet does."""
    config = with_defaults(tiny_config())
    config["forget_sets"]["worst"] = FORGET_SETS["worst"]
    rng = np.random.default_rng(3)
    n_points = N_TRAIN + N_VAL
    splits = np.array(["retain"] * N_TRAIN + ["val"] * N_VAL, dtype=object)
    splits[FORGET] = "forget"
    pd.DataFrame({"split": ["train"] * N_TRAIN + ["val"] * N_VAL}).to_parquet(
        tmp_path / "points.parquet")
    save_array(tmp_path / "forget.npy", FORGET)
    pd.DataFrame({"point": np.arange(n_points), "split": splits,
                  "klom": rng.random(n_points)}).to_parquet(tmp_path / "scored.parquet")
    save_array(tmp_path / "unlearned.npy", rng.normal(size=(6, n_points)))
    save_array(tmp_path / "oracle.npy", rng.normal(size=(6, n_points)))
    snakemake = SimpleNamespace(
        input=Namespace(scored=[str(tmp_path / "scored.parquet")],
                        unlearned=[str(tmp_path / "unlearned.npy")],
                        oracle=str(tmp_path / "oracle.npy"),
                        forget_set=str(tmp_path / "forget.npy"),
                        points=str(tmp_path / "points.parquet")),
        output=SimpleNamespace(intervals=str(tmp_path / "intervals.parquet")),
        params=SimpleNamespace(resampling={
            "config_ids": ["reference"], "diagnostic": False, "klom_options": config["klom"],
            "resampling": {"n_resamples": 4, "delete_fraction": 0.5, "interval": "jackknife",
                           "seed": 0}}),
        wildcards=Namespace(forget_set="worst"), rule="resample_noise_floor", threads=1,
        log=[str(tmp_path / "job.log")], config=config)
    monkeypatch.setenv(SOCKET_VARIABLE, "off")
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / "resample_klom.py"), init_globals={"snakemake": snakemake})
    intervals = pd.read_parquet(tmp_path / "intervals.parquet")
    assert len(intervals) > 1
    assert (intervals["forget_set_proxy"] == "inout_klom").all()
    assert (intervals["forget_set_kind"] == "worst_case").all()
