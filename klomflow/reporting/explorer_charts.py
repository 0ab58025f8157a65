"""The explorer page's charts, as Vega-Lite specs written with Altair.

Each chart reads named datasets (`points`, `histograms`, `images`, `worst`, `class_accuracy`,
`class_klom`, each suffixed with the forget set's position) that
klomflow/reporting/explorer_page.py writes into the page; selections and dropdowns are
Vega-Lite parameters, so no charting code is written by hand.
"""

from __future__ import annotations

import altair as alt

from klomflow.metrics.klom import SPLITS

SPLIT_COLOURS = {"forget": "#d62728", "retain": "#1f77b4", "val": "#2ca02c"}
SIDE_COLOURS = {"unlearned": "#7b3294", "oracle": "#e66101", "original": "#7f7f7f"}
SIDE_ORDER = list(SIDE_COLOURS)
IMAGE_SIZE = 96


def dataset(kind: str, position: int) -> alt.NamedData:
    return alt.NamedData(name=f"{kind}_{position}")


def _setting_parameter(settings, name: str, value: int) -> alt.Parameter:
    labels = list(settings["setting"])
    return alt.param(
        name=name,
        value=value,
        bind=alt.binding_select(
            options=list(range(len(labels))), labels=labels, name=f"{name.split('_')[0]} "
        ),
    )


def default_setting(settings) -> int:
    """The first setting that is not the noise floor (the noise floor when it is alone)."""
    return 1 if len(settings) > 1 else 0


def per_point_chart(settings, n_bins: int, first_point: int, position: int) -> alt.VConcatChart:
    """Scatter of every point (this setting's KLOM against its shift_over_std or another
    setting's KLOM); clicking a point shows its histograms, numbers and image."""
    setting = _setting_parameter(settings, "setting", default_setting(settings))
    x_options = ["shift"] + [f"k{index}" for index in range(len(settings))]
    x_labels = ["this setting's shift_over_std"] + [
        f"KLOM of {label}" for label in settings["setting"]
    ]
    x_axis = alt.param(
        name="x_axis",
        value="shift",
        bind=alt.binding_select(options=x_options, labels=x_labels, name="x axis "),
    )
    # Opens on the forget split: the first question, and a few marks to draw at any scale.
    split = alt.param(
        name="split",
        value="forget",
        bind=alt.binding_select(options=[*SPLITS, "all"], name="split "),
    )
    pick = alt.selection_point(
        name="pick", fields=["point"], on="click", clear=False, value=[{"point": int(first_point)}]
    )
    base = (
        alt.Chart(dataset("points", position))
        .transform_filter("split == 'all' || datum.split == split")
        .transform_calculate(
            klom="datum['k' + setting]",
            x="x_axis == 'shift' ? datum['s' + setting] : datum[x_axis]",
        )
    )
    scatter = (
        base.mark_circle(size=18)
        .encode(
            x=alt.X("x:Q", title="x (see the x axis menu)", scale=alt.Scale(type="symlog")),
            y=alt.Y("klom:Q", title="KLOM of the chosen setting"),
            color=alt.Color(
                "split:N",
                scale=alt.Scale(domain=list(SPLIT_COLOURS), range=list(SPLIT_COLOURS.values())),
            ),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.45)),
            size=alt.condition(pick, alt.value(160), alt.value(18)),
            tooltip=[
                "point:Q",
                "label:Q",
                "split:N",
                alt.Tooltip("klom:Q", format=".3f"),
                alt.Tooltip("x:Q", format=".3f"),
            ],
        )
        .add_params(setting, x_axis, split, pick)
        .properties(width=560, height=320, title="Per-point KLOM: click a point")
    )
    histograms = (
        alt.Chart(dataset("histograms", position))
        .transform_filter(pick)
        .transform_filter("datum.setting == setting")
        .transform_flatten(SIDE_ORDER)
        .transform_window(bin="row_number()")
        .transform_calculate(
            width=f"(datum.hi - datum.lo) / {n_bins}",
        )
        .transform_calculate(
            bin_start="datum.lo + (datum.bin - 1) * datum.width",
            bin_end="datum.lo + datum.bin * datum.width",
        )
        .transform_fold(SIDE_ORDER, as_=["side", "count"])
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X(
                "bin_start:Q",
                title="margin (KLOM's bins for this point)",
                scale=alt.Scale(zero=False),
            ),
            x2="bin_end:Q",
            y=alt.Y("count:Q", title="models"),
            y2=alt.datum(0),
            color=alt.Color(
                "side:N",
                scale=alt.Scale(domain=SIDE_ORDER, range=list(SIDE_COLOURS.values())),
                title="models",
            ),
            row=alt.Row("side:N", sort=SIDE_ORDER, title=None),
            tooltip=[
                "side:N",
                "bin:Q",
                alt.Tooltip("bin_start:Q", format=".3f"),
                alt.Tooltip("bin_end:Q", format=".3f"),
                "count:Q",
            ],
        )
        .properties(width=300, height=70)
    )
    details = _details(settings, pick, position)
    image = (
        alt.Chart(dataset("images", position))
        .transform_filter(pick)
        .mark_image(width=IMAGE_SIZE, height=IMAGE_SIZE, smooth=False)
        .encode(url="uri:N")
        .properties(width=IMAGE_SIZE + 8, height=IMAGE_SIZE + 8, title="image")
    )
    return alt.vconcat(scatter, alt.hconcat(alt.vconcat(details, image), histograms)).resolve_scale(
        color="independent"
    )


def _details(settings, pick, position) -> alt.Chart:
    """The picked point's facts, one line each, for the chosen setting. A sample is left
    out of the counts on the upper edge with reference binning (as KLOM leaves it out),
    and an original outside the bins."""
    lines = {
        "1": "'point ' + datum.point + ' (' + datum.p.split + '), source index ' "
        "+ datum.p.source_index",
        "2": "'label (class): ' + datum.p.label",
        "3": "'KLOM: ' + format(datum.p['k' + setting], '.4f')",
        "4": "'shift_over_std: ' + format(datum.p['s' + setting], '.3f')",
        "5": "'bins: ' + format(datum.lo, '.3f') + ' to ' + format(datum.hi, '.3f')",
        "6": "'counted: ' + counted('unlearned') + ', ' + counted('oracle') + ', ' "
        "+ counted('original')",
    }
    # Models per side of each setting, written into the expressions (the page's data
    # holds only the samples each side left out of its bins).
    for side in ("unlearned", "oracle", "original"):
        totals = "[" + ",".join(str(int(n)) for n in settings[f"n_{side}"]) + "]"
        lines["6"] = lines["6"].replace(
            f"counted('{side}')",
            f"({totals}[setting] - datum.{side}_left_out) + ' of ' + {totals}[setting] "
            f"+ ' {side}'")
    return (
        alt.Chart(dataset("histograms", position))
        .transform_filter(pick)
        .transform_filter("datum.setting == setting")
        .transform_lookup(
            lookup="point", from_=alt.LookupData(dataset("points", position), key="point"), as_="p"
        )
        .transform_calculate(**{f"line{key}": expression for key, expression in lines.items()})
        .transform_fold([f"line{key}" for key in lines], as_=["line", "text"])
        .mark_text(align="left", fontSize=13)
        .encode(y=alt.Y("line:N", axis=None), text="text:N")
        .properties(width=260, height=120, title="picked point")
    )


def worst_chart(settings, k: int, position: int) -> alt.Chart:
    """The k highest-KLOM points per split of the chosen setting, with their images."""
    setting = _setting_parameter(settings, "setting", default_setting(settings))
    base = (
        alt.Chart(dataset("worst", position))
        .transform_filter("datum.setting == setting")
        .transform_lookup(
            lookup="point",
            from_=alt.LookupData(dataset("images", position), key="point", fields=["uri"]),
        )
    )
    x = alt.X("rank:O", title=f"rank (1 = highest KLOM of the split; {k} per split)")
    y = alt.Y("split:N", sort=list(SPLITS), title=None)
    images = base.mark_image(width=56, height=56, smooth=False, yOffset=-8).encode(
        x=x,
        y=y,
        url="uri:N",
        tooltip=[
            "point:Q",
            "label:Q",
            alt.Tooltip("klom:Q", format=".3f"),
            "shares_forget_class:N",
        ],
    )
    marked = (
        base.transform_filter("datum.shares_forget_class")
        .mark_square(size=3800, filled=False, color="#d62728", strokeWidth=2, yOffset=-8)
        .encode(x=x, y=y)
    )
    values = (
        base.transform_calculate(
            caption="format(datum.klom, '.2f') + ' · ' + datum.label + ' · #' + datum.point"
        )
        .mark_text(yOffset=32, fontSize=10)
        .encode(x=x, y=y, text="caption:N")
    )
    return (
        alt.layer(images, marked, values)
        .add_params(setting)
        .properties(
            width=k * 80,
            height=3 * 100,
            title=alt.Title(
                "Worst points per split",
                subtitle=(
                    "below each: KLOM · label · point; red frame: a retain point of a class that "
                    "has points in the forget set"
                ),
            ),
        )
    )


def class_chart(settings, position: int) -> alt.HConcatChart:
    """Per class: positive-margin accuracy of original, unlearned and oracle models, and
    the median KLOM on retain and val of the chosen setting."""
    setting = _setting_parameter(settings, "setting", default_setting(settings))
    models = ["original", "unlearned", "oracle"]
    accuracy = (
        alt.Chart(dataset("class_accuracy", position))
        .transform_filter("datum.setting == -1 || datum.setting == setting")
        .mark_bar()
        .encode(
            x=alt.X("label:O", title="class"),
            xOffset=alt.XOffset("model:N", sort=models),
            y=alt.Y("accuracy:Q", title="margin > 0", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "model:N",
                sort=models,
                scale=alt.Scale(domain=models, range=["#7f7f7f", "#7b3294", "#e66101"]),
            ),
            row=alt.Row("group:N", sort=["forget", "retain", "val"], title=None),
            tooltip=[
                "model:N",
                "label:O",
                "group:N",
                alt.Tooltip("accuracy:Q", format=".3f"),
                "n_points:Q",
            ],
        )
        .add_params(setting)
        .properties(
            width=360,
            height=110,
            title=alt.Title(
                "Class-wise accuracy",
                subtitle="share of points with margin > 0 (p_y > 1/2), "
                "mean over models; rows: forget, retain, val points",
            ),
        )
    )
    klom = (
        alt.Chart(dataset("class_klom", position))
        .transform_filter("datum.setting == setting")
        .mark_bar()
        .encode(
            x=alt.X("label:O", title="class"),
            xOffset=alt.XOffset("split:N", sort=["retain", "val"]),
            y=alt.Y("median_klom:Q", title="median KLOM"),
            color=alt.Color(
                "split:N",
                scale=alt.Scale(
                    domain=["retain", "val"], range=[SPLIT_COLOURS["retain"], SPLIT_COLOURS["val"]]
                ),
            ),
            tooltip=["label:O", "split:N", alt.Tooltip("median_klom:Q", format=".3f")],
        )
        .properties(width=360, height=240, title="Per-class median KLOM, retain and val")
    )
    return alt.hconcat(accuracy, klom).resolve_scale(color="independent")
