from workflow_job import script_context

import math

import numpy as np
import pandas as pd

from klomflow.io import load_array, read_parquet_metadata
from klomflow.metrics.klom import KlomOptions
from klomflow.reporting import figures
from klomflow.reporting.names import NOISE_FLOOR
from klomflow.reporting.tables import with_accuracy_columns

log, config = script_context(snakemake)
forget_set = snakemake.wildcards.forget_set
paper = pd.read_parquet(snakemake.input.paper_table)
paper = paper[paper["forget_set"] == forget_set]
klom = pd.read_parquet(snakemake.input.klom_table)
klom = klom[klom["forget_set"] == forget_set]
# Top-1, or margin-based for published models imported without logits.
accuracy = with_accuracy_columns(pd.read_parquet(snakemake.input.accuracy))
accuracy = accuracy[accuracy["forget_set"] == forget_set]
training = pd.read_parquet(snakemake.input.training_seconds)
retraining = training[(training["role"] == "oracle") & (training["forget_set"] == forget_set)]
retrain_seconds = retraining["train_seconds"].mean()
# Tables from before the flag lack the column: not recorded.
retrain_timing = (figures.timing(retraining["train_seconds_amortised"])
                  if "train_seconds_amortised" in retraining and len(retraining)
                  else "unrecorded")

# Files of every setting on this forget set, keyed by (method, config_id): the per-point
# KLOM file's metadata names its setting; the margins come in the same order.
identities = [read_parquet_metadata(path)["identity"] for path in snakemake.input.klom]
keys = [(identity["method"], identity["config_id"]) for identity in identities]
per_point_paths = dict(zip(keys, snakemake.input.klom))
margin_paths = dict(zip(keys, snakemake.input.unlearned))
selected = paper.drop_duplicates("method")[["method", "config_id", "diagnostic"]]
diagnostic = dict(zip(selected["method"], selected["diagnostic"]))
per_point, unlearned = {}, {}
for method, config_id in zip(selected["method"], selected["config_id"]):
    if method == NOISE_FLOOR:
        per_point[method] = pd.read_parquet(snakemake.input.noise_floor)
        continue
    per_point[method] = pd.read_parquet(per_point_paths[(method, config_id)])
    unlearned[method] = load_array(margin_paths[(method, config_id)])
options = KlomOptions(**snakemake.params.klom_options)
points = figures.histogram_points(per_point, load_array(snakemake.input.forget_set),
                                  snakemake.params.histogram_points)
summary = figures.setting_summary(klom, accuracy, retrain_seconds, retrain_timing)
floor = klom.loc[klom["method"] == NOISE_FLOOR, "average_95"]
floor_average = float(floor.iloc[0]) if len(floor) else np.nan
oracle = accuracy[accuracy["method"] == "oracle"]
oracle_accuracy = {column: float(oracle[column].mean())
                   for column in ("forget_accuracy", "val_accuracy")}
output = snakemake.output
# KLOM's ceiling: disjoint histograms give at most ln(1 / eps).
ceiling = math.log(1 / options.eps)
summary.attrs["ceiling"] = ceiling
figures.save(figures.klom_p95_figure(paper, forget_set, ceiling), output.klom_p95)
figures.save(figures.klom_distribution_figure(per_point, diagnostic, forget_set, ceiling),
             output.klom_distribution)
figures.save(figures.margin_histogram_figure(unlearned, load_array(snakemake.input.oracle),
                                             per_point, diagnostic, points, options, forget_set),
             output.margin_histograms)
figures.save(figures.klom_vs_cost_figure(summary, floor_average, forget_set), output.klom_vs_cost)
figures.save(figures.accuracy_vs_klom_figure(summary, oracle_accuracy, floor_average, forget_set),
             output.accuracy_vs_klom)
log(f"{forget_set}: 5 figures; margin histograms at forget points {points}; "
    f"retraining takes {retrain_seconds:.2f}s per model ({figures.TIMING_WORDS[retrain_timing]})")
