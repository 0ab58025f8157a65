import pandas as pd

from klomflow.config import training_seed
from klomflow.io import load_array, save_parquet
from klomflow.logs import script_context
from klomflow.tables import NOISE_FLOOR_CONFIG_ID, accuracy_rows

log, config = script_context(snakemake)
points = pd.read_parquet(snakemake.input.points)
n_train = int((points["split"] == "train").sum())
identity = snakemake.params.identity
forget_sets = {path.split("/")[-1][: -len(".npy")]: load_array(path)
               for path in snakemake.input.forget_sets}
original = load_array(snakemake.input.original)
rows = []
for (forget_set, indices), oracle_path in zip(forget_sets.items(), snakemake.input.oracle):
    reference = identity | {"forget_set": forget_set, "config_id": NOISE_FLOOR_CONFIG_ID}
    rows += accuracy_rows(original, indices, n_train, reference | {"method": "original"},
                          [training_seed(config, "original", None, k) for k in range(len(original))])
    oracle = load_array(oracle_path)
    rows += accuracy_rows(oracle, indices, n_train, reference | {"method": "oracle"},
                          [training_seed(config, "oracle", forget_set, k) for k in range(len(oracle))])
for margins_path, runs_path in zip(snakemake.input.unlearned, snakemake.input.runs):
    runs = pd.read_parquet(runs_path)
    forget_set, method, config_id = runs.iloc[0][["forget_set", "method", "config_id"]]
    rows += accuracy_rows(load_array(margins_path), forget_sets[forget_set], n_train,
                          identity | {"forget_set": forget_set, "method": method,
                                      "config_id": config_id},
                          runs["seed"].to_numpy(), runs["unlearning_seconds"].to_numpy())
save_parquet(snakemake.output.table, pd.DataFrame(rows), {"config": config})
log(f"{len(rows)} accuracy rows")
