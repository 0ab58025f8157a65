"""The explorer page: one self-contained HTML file per run (results/explorer.html).

Vega, Vega-Lite and vega-embed are inlined from vl-convert's bundle, the data are written
into the page as column-wise JSON, and a Content-Security-Policy forbids every request: the
page opens from disk with no server and no network. Charts: klomflow/reporting/
explorer_charts.py; data: explorer_data.py and explorer_tables.py.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from klomflow.io import read_parquet_metadata
from klomflow.metrics.klom import SPLITS, KlomOptions
from klomflow.options import ExplorerOptions
from klomflow.reporting import explorer_charts as charts
from klomflow.reporting.explorer_data import (
    dataset_images,
    forget_set_data,
    point_images,
)
from klomflow.reporting.explorer_tables import (
    ACCURACIES,
    PRIVACY_COLUMNS,
    class_frames,
    overview_frame,
    worst_frame,
)
from klomflow.reporting.render import proxy_note

TEMPLATE = Path(__file__).with_name("explorer_template.html")
VIEWS = {
    "overview": "Overview",
    "points": "Per point",
    "worst": "Worst points",
    "classes": "Classes",
}


def _javascript_bundle() -> str:
    import altair as alt
    import vl_convert

    version = "v" + "_".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return vl_convert.javascript_bundle(vl_version=version)


def _cell(value):
    """A JSON-safe cell: NaN becomes null, numpy scalars become Python ones."""
    if isinstance(value, (list, np.ndarray)):
        return [_cell(item) for item in value]
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


def columns(frame: pd.DataFrame, digits: dict | None = None, packed: dict | None = None) -> dict:
    """{column: [values]}: the page's column-wise form of a frame (it makes rows again).

    digits: {column: decimals kept}; packed: {column: "float32" or "float16"}, written as
    base64 of the little-endian values (a third of the JSON's size at CIFAR scale).
    """
    digits, packed = digits or {}, packed or {}
    result = {}
    for name in frame.columns:
        values = frame[name]
        if name in packed and packed[name].endswith("[]"):  # one array per row
            dtype = np.dtype(packed[name][:-2]).newbyteorder("<")
            result[name] = {
                packed[name]: [
                    base64.b64encode(np.asarray(cell).astype(dtype).tobytes()).decode("ascii")
                    for cell in values
                ]
            }
        elif name in packed:
            array = values.to_numpy(dtype=np.float64).astype(
                np.dtype(packed[name]).newbyteorder("<")
            )
            result[name] = {packed[name]: base64.b64encode(array.tobytes()).decode("ascii")}
        elif values.dtype.kind == "f":
            array = values.to_numpy()
            rounded = np.round(array, digits.get(name, 6))
            result[name] = [None if not math.isfinite(v) else float(v) for v in rounded]
        elif values.dtype.kind in "iu":
            result[name] = values.astype(np.int64).tolist()
        elif values.dtype.kind == "b":
            result[name] = values.tolist()
        else:
            result[name] = [_cell(v) for v in values]
    return result


def _script_json(payload) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _format(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def overview_html(frame: pd.DataFrame) -> str:
    """A sortable table: each cell carries its full value in data-value."""
    heads = [("setting", "setting"), ("selected", "selected")]
    for split in SPLITS:
        heads += [(f"{split}_p95", f"{split} p95"), (f"{split}_mean", f"{split} mean")]
    heads += [("average_95", "average_95")]
    heads += [(c, label) for c, label in ACCURACIES.items() if c in frame]
    if "unlearning_seconds" in frame:
        heads.append(("unlearning_seconds", "unlearning s"))
    heads += [(c, label) for c, label in PRIVACY_COLUMNS.items() if c in frame]
    head = "".join(f'<th data-column="{c}">{html.escape(label)}</th>' for c, label in heads)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, _ in heads:
            value = row[column]
            if column == "setting":
                cells.append(
                    f'<td data-column="setting" data-value="{html.escape(value)}">'
                    f"{html.escape(value)}</td>"
                )
                continue
            if column == "selected":
                text = "✓" if bool(value) else ""
                cells.append(
                    f'<td data-column="selected" data-value="{int(bool(value))}">{text}</td>'
                )
                continue
            value = None if pd.isna(value) else float(value)
            text = _format(value)
            low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
            if column.endswith("_p95") and low is not None and not pd.isna(low):
                text += f' <span class="interval">[{low:.3f}, {high:.3f}]</span>'
            if column == "unlearning_seconds" and row.get("unlearning_timing") == "amortised":
                text += ' <span class="amortised" title="a share of an ensemble\'s time">(a)</span>'
            data = "" if value is None else repr(value)
            cells.append(f'<td data-column="{column}" data-value="{data}">{text}</td>')
        kind = ' class="floor"' if row["method"] == "oracle_holdout" else ""
        rows.append(f"<tr{kind}>{''.join(cells)}</tr>")
    return (
        f'<table class="overview sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def run_notes(klom_table: pd.DataFrame, source_manifest: dict | None, run: dict) -> list[str]:
    notes = [
        f"{run.get('dataset', '?')} · {run.get('model', '?')} · "
        f"{run.get('n_unlearned', '?')} unlearned models against {run.get('n_oracle', '?')} "
        f"oracles per point · KLOM {run.get('klom', '')}"
    ]
    if source_manifest is not None:
        source = run.get("source") or {}
        where = f" ({source.get('layout')} layout, {source.get('path')})" if source else ""
        notes.append(
            f"Models from a published source{where}: results/source/manifest.json "
            f"holds the SHA-256 of the {len(source_manifest)} published files this "
            f"run read."
        )
    proxy = proxy_note(klom_table)
    if proxy:
        notes.append(proxy)
    return notes


def forget_set_section(
    results: Path,
    klom_table,
    paper_table,
    accuracy,
    privacy,
    points_table,
    images,
    forget_set: str,
    position: int,
    klom_options: KlomOptions,
    options: ExplorerOptions,
    seed: int,
) -> dict:
    data = forget_set_data(
        results, klom_table, points_table, forget_set, klom_options, options, seed
    )
    overview = overview_frame(klom_table, paper_table, accuracy, privacy, data)
    worst = worst_frame(data, options.worst_points)
    class_accuracy, class_klom = class_frames(results, data)
    first = charts.default_setting(data.settings)
    forget_points = data.points[data.points["split"] == "forget"]
    first_point = int(forget_points.loc[forget_points[f"k{first}"].idxmax(), "point"])
    uris = point_images(images, data.detail_points)
    # KLOM exact to float32; shift_over_std to three significant digits (float16).
    packed = {c: "float32" for c in data.points if c.startswith("k") and c[1:].isdigit()} | {
        c: "float16" for c in data.points if c.startswith("s") and c[1:].isdigit()
    }
    # Counts of models per bin, one base64 string per row and side (uint16 beyond 255).
    most = max(
        (
            int(np.max(np.stack(data.histograms[side])))
            for side in charts.SIDE_ORDER
            if len(data.histograms)
        ),
        default=0,
    )
    counts_type = "uint8[]" if most <= 255 else "uint16[]"
    counts_packed = dict.fromkeys(charts.SIDE_ORDER, counts_type)
    proxy = (
        klom_table.loc[klom_table["forget_set"] == forget_set, "forget_set_proxy"]
        if "forget_set_proxy" in klom_table
        else pd.Series(dtype=object)
    )
    proxy = next((p for p in proxy if isinstance(p, str) and p), None)
    sampled = data.sampling_note + ("" if uris else " No images: the dataset's files are absent.")
    return {
        "name": forget_set,
        "proxy": proxy,
        "kind": data.sidecar.get("kind", ""),
        "size": int((data.points["split"] == "forget").sum()),
        "sampling": sampled,
        "overview": overview_html(overview),
        "datasets": {
            f"points_{position}": columns(data.points, packed=packed),
            f"histograms_{position}": columns(data.histograms, packed=counts_packed),
            f"images_{position}": {"point": list(uris), "uri": list(uris.values())},
            f"worst_{position}": columns(worst, {"klom": 4}),
            f"class_accuracy_{position}": columns(class_accuracy, {"accuracy": 4}),
            f"class_klom_{position}": columns(class_klom, {"median_klom": 4}),
        },
        "specs": {
            "points": charts.per_point_chart(
                data.settings, klom_options.bins, first_point, position
            ).to_dict(),
            "worst": charts.worst_chart(data.settings, options.worst_points, position).to_dict(),
            "classes": charts.class_chart(data.settings, position).to_dict(),
        },
    }


def explorer_html(
    results,
    klom_options: KlomOptions,
    options: ExplorerOptions,
    images: np.ndarray | None = None,
    dataset: dict | None = None,
    seed: int = 0,
) -> str:
    """The page of the run under `results` (a folder in the workflow's layout).

    images: uint8 [n_points, H, W(, 3)] in point order; without it the images come from
    `dataset` (the config's section), or the page goes without. seed: of the random sample
    of points with histograms (in runs above `options.all_points_up_to` points).
    """
    results = Path(results)
    tables = results / "tables"
    klom_table = pd.read_parquet(tables / "klom.parquet")
    metadata = read_parquet_metadata(tables / "klom.parquet")

    def optional(name):
        path = tables / name
        return pd.read_parquet(path) if path.exists() else None

    points_table = pd.read_parquet(results / "data" / "points.parquet")
    if images is None and dataset is not None:
        images = dataset_images(dataset, points_table)
    manifest_path = results / "source" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    forget_sets = list(dict.fromkeys(klom_table["forget_set"]))
    sections = [
        forget_set_section(
            results,
            klom_table,
            optional("paper_klom.parquet"),
            optional("accuracy.parquet"),
            optional("privacy.parquet"),
            points_table,
            images,
            name,
            position,
            klom_options,
            options,
            seed,
        )
        for position, name in enumerate(forget_sets)
    ]
    first = klom_table.iloc[0]
    run = {
        "dataset": first.get("dataset"),
        "model": first.get("model"),
        "n_unlearned": int(klom_table["n_unlearned"].max()),
        "n_oracle": int(klom_table["n_oracle"].max()),
        "klom": (
            f"{klom_options.bins} bins, eps {klom_options.eps}, clip "
            f"{klom_options.clip}, {klom_options.binning} binning, "
            f"{klom_options.direction.replace('_', ' ')}"
        ),
        "source": (metadata.get("provenance") or metadata).get("source"),
    }
    page = {
        "sections": [{k: v for k, v in s.items() if k != "datasets"} for s in sections],
        "views": VIEWS,
    }
    # One JSON block per forget set, parsed when the reader opens it.
    data = "\n".join(
        f'<script type="application/json" id="data-{position}">'
        f"{_script_json(section['datasets'])}</script>"
        for position, section in enumerate(sections)
    )
    notes = "".join(
        f'<p class="note">{html.escape(n)}</p>' for n in run_notes(klom_table, manifest, run)
    )
    return (
        TEMPLATE.read_text()
        .replace("/*VEGA_BUNDLE*/", _javascript_bundle().replace("</script", "<\\/script"))
        .replace("<!--NOTES-->", notes)
        .replace("<!--CEILING-->", f"{math.log(1 / klom_options.eps):.2f}")
        .replace("/*PAGE*/null", _script_json(page))
        .replace("<!--DATA-->", data)
    )
