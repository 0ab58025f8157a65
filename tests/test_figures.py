"""What the report figures plot, read back from their matplotlib Axes.

Made-up tables and margins with known values: the intervals, the noise floor,
the methods shown and their order, and the margin histograms on KLOM's bins.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer, ErrorbarContainer

from klomflow.metrics.klom import SPLITS, KlomOptions, klom_per_point
from klomflow.reporting import figures
from klomflow.reporting.selection import NOISE_FLOOR, STATISTICS
from klomflow.reporting.styles import method_style


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def paper_rows(cells: dict) -> pd.DataFrame:
    """paper_klom.parquet rows of one forget set from {method: (diagnostic, {statistic:
    (estimate, low, high)})}."""
    return pd.DataFrame([
        {"forget_set": "random_30", "method": method, "config_id": f"id_{method}",
         "diagnostic": diagnostic, "statistic": statistic, "estimate": estimate, "low": low,
         "high": high}
        for method, (diagnostic, values) in cells.items()
        for statistic, (estimate, low, high) in values.items()])


def patch_x_range(patch) -> tuple[float, float]:
    """x extent of a patch in data coordinates (axvspan: a Rectangle or a Polygon)."""
    x = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
    return float(x.min()), float(x.max())


def constant_lines(ax, axis: str) -> list[tuple[float, str]]:
    """(value, linestyle) of the straight lines across the Axes (axhline: y, axvline: x)."""
    found = []
    for line in ax.lines:
        values = np.asarray(line.get_xdata() if axis == "x" else line.get_ydata(), dtype=float)
        if len(values) == 2 and values[0] == values[1]:
            found.append((float(values[0]), line.get_linestyle()))
    return found


def test_p95_figure_plots_the_estimates_intervals_and_noise_floor():
    rng = np.random.default_rng(0)
    cells = {}
    for method, diagnostic in (("scrub", False), ("oracle_matching", True), ("ascent", False),
                               (NOISE_FLOOR, False)):
        values = {}
        for statistic in STATISTICS:
            estimate = float(rng.uniform(0.5, 5))
            values[statistic] = (estimate, estimate - rng.uniform(0.1, 0.4),
                                 estimate + rng.uniform(0.1, 0.9))
        cells[method] = (diagnostic, values)
    figure = figures.klom_p95_figure(paper_rows(cells), "random_30")
    axes = figure.axes[:3]
    # Methods in name order, the diagnostic marked, the noise floor not a bar.
    shown = ["ascent", "oracle_matching", "scrub"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [
        "ascent", "oracle_matching †", "scrub"]
    for ax, split in zip(axes, SPLITS):
        statistic = f"{split}_p95"
        bars = next(c for c in ax.containers if isinstance(c, BarContainer))
        # barh: a bar's width is its value, its centre its row.
        assert [bar.get_width() for bar in bars] == pytest.approx(
            [cells[m][1][statistic][0] for m in shown], abs=0)
        assert [bar.get_y() + bar.get_height() / 2 for bar in bars] == pytest.approx([0, 1, 2])
        errors = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
        segments = errors.lines[2][0].get_segments()
        for segment, method, row in zip(segments, shown, range(3)):
            _, low, high = cells[method][1][statistic]
            np.testing.assert_allclose(segment, [[low, row], [high, row]], rtol=1e-12)
        floor_estimate, floor_low, floor_high = cells[NOISE_FLOOR][1][statistic]
        assert constant_lines(ax, "x") == [(pytest.approx(floor_estimate, abs=0), "--")]
        spans = [patch for patch in ax.patches if patch not in bars.patches]
        assert [patch_x_range(patch) for patch in spans] == [
            pytest.approx((floor_low, floor_high), abs=1e-12)]
        assert ax.get_legend().get_texts()[0].get_text() == f"noise floor {floor_estimate:.2f}"


def test_distribution_figure_shows_every_method_per_split():
    rng = np.random.default_rng(1)
    splits = np.array(["forget"] * 10 + ["retain"] * 30 + ["val"] * 20)
    per_point = {}
    for method, scale in (("scrub", 1.0), (NOISE_FLOOR, 0.2), ("ascent", 3.0)):
        klom = rng.gamma(2.0, scale, size=len(splits))
        klom[3] = np.nan  # a missing value is left out, not plotted as 0
        per_point[method] = pd.DataFrame({"point": np.arange(len(splits)), "split": splits,
                                          "klom": klom})
    figure = figures.klom_distribution_figure(per_point, {"scrub": True}, "random_30")
    order = [NOISE_FLOOR, "ascent", "scrub"]
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == [
        "noise floor", "ascent", "scrub †"]
    for ax, split in zip(figure.axes[:3], SPLITS):
        boxes = sorted(ax.patches, key=lambda patch: patch.get_path().vertices[:, 1].mean())
        assert len(boxes) == 3
        for method, box in zip(order, boxes):
            frame = per_point[method]
            values = frame.loc[frame["split"] == split, "klom"].dropna().to_numpy()
            x = box.get_path().vertices[:, 0]
            assert (x.min(), x.max()) == pytest.approx(tuple(np.percentile(values, [25, 75])))
            y = box.get_path().vertices[:, 1]
            # The median line spans the box.
            medians = [line.get_xdata()[0] for line in ax.lines
                       if tuple(line.get_ydata()) == (y.min(), y.max())]
            assert medians == [pytest.approx(np.median(values))]


@pytest.mark.parametrize("binning", ["reference", "inclusive"])
def test_margin_histograms_are_the_ones_klom_compares(binning):
    """Bars on KLOM's bins with KLOM's probabilities: KL over the bars is the point's KLOM."""
    rng = np.random.default_rng(2)
    options = KlomOptions(bins=8, clip=4.0, binning=binning)
    n_points = 12
    oracle = rng.normal(0, 1, size=(7, n_points))
    unlearned = {"scrub": rng.normal(1, 1.5, size=(6, n_points)),
                 "ascent": rng.normal(-2, 2, size=(5, n_points))}
    unlearned["ascent"][0] = np.nan  # a diverged run is left out, as in KLOM
    oracle[0, 3] = 9.0  # beyond the clip: KLOM bins the clipped value
    per_point = {method: pd.DataFrame({"point": np.arange(n_points), "split": "forget",
                                       "klom": klom_per_point(margins[np.isfinite(margins)
                                                                      .all(axis=1)], oracle,
                                                              options)})
                 for method, margins in unlearned.items()}
    points = [3, 8]
    figure = figures.margin_histogram_figure(unlearned, oracle, per_point, {}, points, options,
                                             "random_30")
    axes = np.array(figure.axes).reshape(2, 2)
    for row, method in enumerate(["ascent", "scrub"]):
        margins = unlearned[method][np.isfinite(unlearned[method]).all(axis=1)]
        for column, point in enumerate(points):
            ax = axes[row, column]
            u = np.clip(margins[:, point], -options.clip, options.clip)
            o = np.clip(oracle[:, point], -options.clip, options.clip)
            edges = np.linspace(min(u.min(), o.min()), max(u.max(), o.max()), options.bins + 1)
            expected_p, expected_q = (binned(u, edges, binning), binned(o, edges, binning))
            bars = [c for c in ax.containers if isinstance(c, BarContainer)]
            assert [c.get_label() for c in bars] == ["unlearned", "oracle"]
            for container, expected in zip(bars, (expected_p, expected_q)):
                heights = np.array([bar.get_height() for bar in container])
                np.testing.assert_allclose(heights, expected, rtol=1e-12, atol=0)
            # Each pair of bars sits inside its bin: unlearned left of the centre, oracle right.
            for k, (left, right) in enumerate(zip(*bars)):
                assert edges[k] <= left.get_x() < left.get_x() + left.get_width() <= (
                    right.get_x() + 1e-12) <= edges[k + 1] + 1e-12
                assert right.get_x() + right.get_width() <= edges[k + 1] + 1e-12
            p = expected_p
            q = np.maximum(expected_q, options.eps)
            with np.errstate(divide="ignore", invalid="ignore"):
                from_bars = float(np.where(p > 0, p * np.log(p / q), 0.0).sum())
            assert from_bars == pytest.approx(per_point[method]["klom"][point], abs=1e-12)
            assert ax.get_title().endswith(f"KLOM {per_point[method]['klom'][point]:.2f}")


def binned(sample, edges, binning):
    """Bin probabilities as KLOM.md states them: numpy.digitize, indices 1..bins counted
    (a sample on the upper edge is dropped) for reference binning; numpy.histogram for
    inclusive; normalised by the samples counted."""
    bins = len(edges) - 1
    if binning == "inclusive":
        counts = np.histogram(sample, bins=edges)[0]
    else:
        index = np.digitize(sample, edges)
        counts = np.array([(index == k).sum() for k in range(1, bins + 1)])
    return counts / counts.sum()


def test_histogram_points_run_from_the_median_to_the_worst_forget_point():
    forget = np.array([4, 9, 11, 20, 31])
    klom = {4: 0.1, 9: 5.0, 11: 0.3, 20: 2.0, 31: 1.0}
    frame = pd.DataFrame({"point": list(klom), "klom": list(klom.values())})
    floor = pd.DataFrame({"point": list(klom), "klom": [99.0] * 5})  # never counted
    chosen = figures.histogram_points({"scrub": frame, NOISE_FLOOR: floor}, forget, 3)
    # Sorted by KLOM: 4, 11, 31, 20, 9; ranks 2, 3, 4 (median to worst).
    assert chosen == [31, 20, 9]


def summary_inputs():
    klom_table = pd.DataFrame({
        "method": [NOISE_FLOOR, "scrub", "scrub", "scrub", "oracle_matching", "do_nothing"],
        "config_id": ["reference", "a", "a", "b", "c", "d"],
        "diagnostic": [False, False, False, False, True, False],
        "average_95": [0.7, 2.0, 2.0, 3.0, 1.1, 9.0],
        "selected": [True, True, True, False, True, True]})
    accuracy = pd.DataFrame({
        "method": ["original", "oracle", "oracle", "scrub", "scrub", "scrub", "oracle_matching",
                   "do_nothing"],
        "config_id": ["reference", "reference", "reference", "a", "a", "b", "c", "d"],
        "unlearning_seconds": [np.nan, np.nan, np.nan, 1.0, 3.0, 4.0, 10.0, 0.0],
        "forget_accuracy": [1.0, 0.2, 0.4, 0.5, 0.7, 0.9, 0.3, 1.0],
        "val_accuracy": [0.9, 0.8, 0.8, 0.7, 0.7, 0.8, 0.8, 0.9]})
    return klom_table, accuracy


def test_setting_summary_and_the_cost_figure():
    klom_table, accuracy = summary_inputs()
    summary = figures.setting_summary(klom_table, accuracy, retrain_seconds=20.0)
    assert list(zip(summary["method"], summary["config_id"])) == [
        ("do_nothing", "d"), ("oracle_matching", "c"), ("scrub", "a"), ("scrub", "b")]
    # Mean seconds over models / retraining; doing nothing floored for the log axis.
    assert summary["cost_fraction"].tolist() == pytest.approx(
        [figures.MIN_COST_FRACTION, 0.5, 0.1, 0.2])
    assert summary["forget_accuracy"].tolist() == pytest.approx([1.0, 0.3, 0.6, 0.9])
    figure = figures.klom_vs_cost_figure(summary, floor_average=0.7, forget_set="random_30")
    ax = figure.axes[0]
    assert (0.7, "--") in constant_lines(ax, "y") and (1.0, ":") in constant_lines(ax, "x")
    big = {}
    for collection in ax.collections:
        if isinstance(collection, PathCollection) and collection.get_sizes()[0] == 60:
            big[collection.get_label()] = collection.get_offsets().tolist()
    # One large dot per method, at its selected setting (scrub: a, not b).
    assert big == {"do_nothing": [[figures.MIN_COST_FRACTION, 9.0]],
                   "oracle_matching †": [[0.5, 1.1]], "scrub": [[0.1, 2.0]]}
    small = sorted(point for collection in ax.collections if collection.get_sizes()[0] == 12
                   for point in collection.get_offsets().tolist())
    assert [0.2, 3.0] in small and len(small) == 4


def test_accuracy_figure_marks_the_oracles_and_the_noise_floor():
    klom_table, accuracy = summary_inputs()
    summary = figures.setting_summary(klom_table, accuracy, retrain_seconds=20.0)
    figure = figures.accuracy_vs_klom_figure(
        summary, {"forget_accuracy": 0.3, "val_accuracy": 0.8}, floor_average=0.7,
        forget_set="random_30")
    for ax, column, target in zip(figure.axes[:2], ("forget_accuracy", "val_accuracy"),
                                  (0.3, 0.8)):
        assert constant_lines(ax, "y") == [(target, "--")]
        assert constant_lines(ax, "x") == [(0.7, "--")]
        points = sorted(point for collection in ax.collections
                        for point in collection.get_offsets().tolist())
        expected = sorted([a, b] for a, b in zip(summary["average_95"], summary[column]))
        # Every setting once as a small dot, the selected ones again as large dots.
        assert sorted({tuple(p) for p in points}) == sorted({tuple(p) for p in expected})


def test_the_cost_figure_tells_amortised_times_from_times_alone():
    """A twin's unlearning_seconds are its share of an ensemble's wall time, other methods'
    one model's own: the cost axis marks which is which, and says how retraining was timed."""
    from matplotlib.markers import MarkerStyle

    klom_table, accuracy = summary_inputs()
    # scrub ran as an ensemble (both settings), oracle_matching's two models disagree,
    # do_nothing ran alone; the originals and oracles have no unlearning time.
    accuracy["unlearning_seconds_amortised"] = [None, None, None, True, True, True, True, False]
    accuracy.loc[accuracy["method"] == "oracle_matching", "unlearning_seconds_amortised"] = None
    summary = figures.setting_summary(klom_table, accuracy, retrain_seconds=20.0,
                                      retrain_timing="amortised")
    assert dict(zip(summary["method"] + "/" + summary["config_id"],
                    summary["unlearning_timing"])) == {
        "do_nothing/d": "alone", "oracle_matching/c": "unrecorded", "scrub/a": "amortised",
        "scrub/b": "amortised"}
    mixed = accuracy.copy()
    mixed.loc[4, "unlearning_seconds_amortised"] = False  # one of scrub a's two models
    assert figures.setting_summary(klom_table, mixed, 20.0)["unlearning_timing"][2] == "mixed"

    figure = figures.klom_vs_cost_figure(summary, floor_average=0.7, forget_set="random_30")
    ax = figure.axes[0]

    def shape(marker):
        style = MarkerStyle(marker)
        return style.get_path().transformed(style.get_transform()).vertices.round(6).tolist()

    big = {collection.get_label(): collection
           for collection in ax.collections
           if isinstance(collection, PathCollection) and collection.get_sizes()[0] == 60}
    # The marker is the method's own (the same in every figure); the fill tells the timing.
    assert {label: collection.get_paths()[0].vertices.round(6).tolist()
            for label, collection in big.items()} == {
        "do_nothing": shape(method_style("do_nothing")[1]),
        "oracle_matching †": shape(method_style("oracle_matching")[1]),
        "scrub": shape(method_style("scrub")[1])}
    hollow = {label for label, collection in big.items()
              if len(collection.get_facecolors()) == 0 or collection.get_facecolors()[0][3] == 0}
    assert hollow == {"scrub"}  # amortised
    faded = {label for label, collection in big.items() if collection.get_alpha() == 0.3}
    assert faded == {"oracle_matching †"}  # not recorded
    label = ax.get_xlabel()
    assert "filled: one model timed alone" in label
    assert "hollow: amortised (an ensemble's wall time / its models)" in label
    assert "faded: not recorded" in label and "hatched" not in label
    assert "retraining: amortised" in label


def test_a_method_keeps_its_colour_and_marker_whichever_methods_run_beside_it():
    """The accuracy figure of two forget sets with different method lists: each method is
    drawn in one (colour, marker) in both, and no two methods share one."""
    klom_table, accuracy = summary_inputs()
    summary = figures.setting_summary(klom_table, accuracy, retrain_seconds=20.0)
    alone = summary[summary["method"] != "do_nothing"]  # the other forget set lacks one
    styles = []
    for frame in (summary, alone):
        figure = figures.accuracy_vs_klom_figure(frame, {"forget_accuracy": 0.3},
                                                 floor_average=0.7, forget_set="random_30")
        ax = figure.axes[0]
        styles.append({collection.get_label(): (
            tuple(np.round(collection.get_facecolors()[0][:3], 6)),
            collection.get_paths()[0].vertices.round(6).tobytes())
            for collection in ax.collections
            if isinstance(collection, PathCollection) and collection.get_sizes()[0] == 60})
    assert {label: styles[0][label] for label in styles[1]} == styles[1]
    assert len(set(styles[0].values())) == len(styles[0]) == 3
    # Every built-in method has a pair of its own.
    from klomflow.unlearning.methods.registry import REGISTRY
    assert len({method_style(method) for method in REGISTRY}) == len(REGISTRY)


def test_the_klom_figures_draw_the_ceiling():
    """ln(1 / eps), where disjoint histograms put KLOM, in the p95, distribution, cost and
    accuracy figures."""
    ceiling = float(np.log(1 / 1e-5))
    cells = {method: (False, {statistic: (1.0, 0.5, 1.5) for statistic in STATISTICS})
             for method in ("scrub", NOISE_FLOOR)}
    p95 = figures.klom_p95_figure(paper_rows(cells), "random_30", ceiling)
    per_point = {"scrub": pd.DataFrame({"point": [0, 1, 2], "split": list(SPLITS),
                                        "klom": [1.0, 2.0, 3.0]})}
    distribution = figures.klom_distribution_figure(per_point, {}, "random_30", ceiling)
    for ax in p95.axes[:3] + distribution.axes[:3]:
        assert (pytest.approx(ceiling), "-.") in constant_lines(ax, "x")
    klom_table, accuracy = summary_inputs()
    summary = figures.setting_summary(klom_table, accuracy, retrain_seconds=20.0)
    summary.attrs["ceiling"] = ceiling
    cost = figures.klom_vs_cost_figure(summary, 0.7, "random_30")
    assert (pytest.approx(ceiling), "-.") in constant_lines(cost.axes[0], "y")
    accuracy_figure = figures.accuracy_vs_klom_figure(summary, {}, 0.7, "random_30")
    assert (pytest.approx(ceiling), "-.") in constant_lines(accuracy_figure.axes[0], "x")


def test_the_margin_histograms_title_clears_the_panels_and_the_y_axis_is_named():
    rng = np.random.default_rng(3)
    oracle = rng.normal(0, 1, size=(6, 4))
    # As many methods as the default config runs: the rows that pushed the title down.
    unlearned = {f"method_{k:02d}": rng.normal(1, 1, size=(6, 4)) for k in range(15)}
    per_point = {m: pd.DataFrame({"point": np.arange(4), "split": "forget", "klom": 1.0})
                 for m in unlearned}
    figure = figures.margin_histogram_figure(unlearned, oracle, per_point, {}, [2],
                                             KlomOptions(), "random_30")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    title = figure._suptitle.get_window_extent(renderer)
    for ax in figure.axes:
        assert ax.get_tightbbox(renderer).y1 <= title.y0  # below the title, not under it
    assert [ax.get_ylabel() for ax in figure.axes] == ["share of models"] * 15
