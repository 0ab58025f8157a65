from workflow_job import script_context

import pandas as pd
from klomflow.tables import point_splits

from klomflow.io import load_array, save_parquet
from klomflow.privacy import FEW_MODELS, PrivacyOptions
from klomflow.privacy_tables import accuracies, evaluate_setting

log, config = script_context(snakemake)
params = snakemake.params.privacy
points = pd.read_parquet(snakemake.input.points)
labels = points["label"].to_numpy()
splits = point_splits(int((points["split"] == "train").sum()),
                      int((points["split"] == "val").sum()), load_array(snakemake.input.forget_set))
tested, oracle = load_array(snakemake.input.tested), load_array(snakemake.input.oracle)
n_scored = params["n_scored"]
# The held-out oracles (reference row) are the rows after the scored ones in the same shards.
reference = snakemake.rule == "compute_privacy_reference"
accuracy_tested, definition = accuracies(
    snakemake.input.tested_logits, tested, labels, splits,
    rows=slice(n_scored, None) if reference else None)
accuracy_oracle, _ = accuracies(snakemake.input.oracle_logits, oracle, labels, splits,
                                rows=slice(0, n_scored))
options = PrivacyOptions(**params["options"])
frame, rows = evaluate_setting(tested, oracle, load_array(snakemake.input.original), splits,
                               options, params["identity"], accuracy_tested, accuracy_oracle,
                               definition, threads=snakemake.threads)
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
