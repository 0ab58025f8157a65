from workflow_job import script_context

import pandas as pd

from klomflow.io import load_array, save_parquet
from klomflow.metrics.privacy.options import FEW_MODELS, PrivacyOptions
from klomflow.reporting.privacy_tables import (
    equal_count_reference,
    evaluate_setting,
    utility_accuracies,
)
from klomflow.reporting.tables import point_splits

log, config = script_context(snakemake)
params = snakemake.params.privacy
points = pd.read_parquet(snakemake.input.points)
labels = points["label"].to_numpy()
splits = point_splits(int((points["split"] == "train").sum()),
                      int((points["split"] == "val").sum()), load_array(snakemake.input.forget_set),
                      len(points))
tested, oracle = load_array(snakemake.input.tested), load_array(snakemake.input.oracle)
original = load_array(snakemake.input.original)
n_scored = params["n_scored"]
tested_rows = None
if snakemake.rule == "compute_privacy_reference":
    # The held-out oracles (reference row), at the methods' number of models (one per
    # original); they are the rows after the scored ones in the oracle shards.
    tested, warning = equal_count_reference(tested, len(original))
    tested_rows = slice(n_scored, n_scored + len(tested))
    if warning:
        log(warning)
accuracy_tested, accuracy_oracle, definition = utility_accuracies(
    snakemake.input.tested_logits, tested, snakemake.input.oracle_logits, oracle, labels, splits,
    tested_rows=tested_rows, oracle_rows=slice(0, n_scored))
if definition != "top1":
    log("accuracy ratios from margin > 0 on both sides (a lower bound of top-1): "
        f"{'the oracles' if snakemake.input.tested_logits else 'the models under test'} "
        "have no logits")
options = PrivacyOptions(**params["options"])
frame, rows = evaluate_setting(tested, oracle, original, splits, options, params["identity"],
                               accuracy_tested, accuracy_oracle, definition,
                               threads=snakemake.threads)
save_parquet(snakemake.output.points, frame,
             params | {"rows": rows, "accuracy": {"tested": accuracy_tested,
                                                  "oracle": accuracy_oracle}})
forget = rows[0]
if min(forget["n_unlearned"], forget["n_oracle"]) < FEW_MODELS:
    log(f"WARNING: {forget['n_unlearned']} vs {forget['n_oracle']} models: the privacy "
        f"metrics are rough below {FEW_MODELS} models a side")
log(f"{params['identity']}: forget F {forget.get('competition_forget_quality')}, "
    f"U-LiRA AUC {forget.get('ulira_auc')}, LiRA AUC {forget.get('lira_auc')}; "
    f"{len(frame)} points scored; reason: {forget['reason']}")
