# Input and params functions of rules/corrective.smk (docs/corrective.md).
import types

import klomflow.forget_sets.kinds
from klomflow.metrics import klom as klom_module

# The identified forget sets (kind: identified) and, for each, its gold standard: the
# fraction-1.0 set of its manipulation (oracles retrained without all of S_m).
IDENTIFIED = sorted(
    f for f in FORGET_SETS if config["forget_sets"][f]["kind"] == "identified"
)
GOLD_STANDARD = klomflow.forget_sets.kinds.corrective_references(config["forget_sets"])
MANIPULATIONS = list(config.get("manipulations") or {})
# The references' names (klomflow/reporting/corrective.py): A retrains without S_f, B without S_m.
WITHOUT_FORGET_SET, WITHOUT_MANIPULATED = "without_forget_set", "without_manipulated"


def corrective_outputs(wildcards=None):
    """The corrective tables and figure, when the config has identified forget sets."""
    if not IDENTIFIED:
        return []
    return [
        *rules.tabulate_corrective.output,
        rules.plot_corrective.output.figure,
        *expand(rules.record_manipulation.output, manipulation=MANIPULATIONS),
    ]


def manipulation_spec(wildcards):
    return config["manipulations"][wildcards.manipulation]


def gold_standard_margins(wildcards):
    """The scored oracles' margins of the forget set's gold standard (reference B)."""
    return rules.gather_oracle_margins.output.scored.format(
        forget_set=GOLD_STANDARD[wildcards.forget_set]
    )


def corrective_klom_params(wildcards):
    return klom_params(wildcards) | {
        "reference": WITHOUT_MANIPULATED,
        "reference_forget_set": GOLD_STANDARD[wildcards.forget_set],
    }


def retrain_klom_params(wildcards):
    """The held-out oracles of the forget set scored against the gold standard's oracles."""
    params = klom_params(wildcards)
    params["identity"] |= {"method": "retrain_without_forget_set"}
    return params | {
        "reference": WITHOUT_MANIPULATED,
        "reference_forget_set": GOLD_STANDARD[wildcards.forget_set],
    }


def corrective_klom_entries():
    """[(per-point KLOM file, what it holds)] for the corrective table, in a fixed order."""
    entries = []
    for forget_set in IDENTIFIED:
        gold = GOLD_STANDARD[forget_set]
        floor_a = rules.compute_noise_floor.output.klom.format(forget_set=forget_set)
        floor_b = rules.compute_noise_floor.output.klom.format(forget_set=gold)
        retrain_b = rules.compute_retrain_klom.output.klom.format(forget_set=forget_set)
        rows = [
            (floor_a, "noise_floor", None, None, WITHOUT_FORGET_SET),
            # Against A, the held-out oracles of A are A's noise floor.
            (floor_a, "retrain_without_forget_set", None, None, WITHOUT_FORGET_SET),
            (floor_b, "noise_floor", None, None, WITHOUT_MANIPULATED),
            (retrain_b, "retrain_without_forget_set", None, None, WITHOUT_MANIPULATED),
        ]
        for setting in sorted(SETTINGS, key=lambda s: (s.entry, s.config_id)):
            if forget_set not in setting.forget_sets:
                continue
            names = {
                "forget_set": forget_set,
                "method": setting.entry,
                "config_id": setting.config_id,
            }
            rows += [
                (
                    rules.compute_klom.output.klom.format(**names),
                    "method",
                    setting.entry,
                    setting.config_id,
                    WITHOUT_FORGET_SET,
                ),
                (
                    rules.compute_corrective_klom.output.klom.format(**names),
                    "method",
                    setting.entry,
                    setting.config_id,
                    WITHOUT_MANIPULATED,
                ),
            ]
        for path, row, method, config_id, reference in rows:
            entries.append(
                (
                    path,
                    {
                        "forget_set": forget_set,
                        "row": row,
                        "method": method,
                        "config_id": config_id,
                        "reference": reference,
                    },
                )
            )
    return entries


def corrective_logit_entries():
    """[(logit group key, its shards, what the models are)] for the top-1 metrics."""
    entries = []
    for forget_set in IDENTIFIED:
        base = {"forget_set": forget_set, "method": None, "config_id": None}
        entries.append(
            ("original", original_logit_shards(None), base | {"row": "original"})
        )
        # Held-out oracles only: the models of the KLOM row of the same name.
        entries.append(
            (
                f"oracle/{forget_set}",
                oracle_logit_shards(wildcards_of(forget_set)),
                base | {"row": "retrain_without_forget_set", "holdout_only": True},
            )
        )
        for setting in sorted(SETTINGS, key=lambda s: (s.entry, s.config_id)):
            if forget_set not in setting.forget_sets:
                continue
            shards = expand(
                rules.unlearn.output.logits,
                forget_set=forget_set,
                method=setting.entry,
                config_id=setting.config_id,
                shard=range(n_shards("original")),
            )
            row = base | {
                "row": "method",
                "method": setting.entry,
                "config_id": setting.config_id,
            }
            key = f"unlearned/{forget_set}/{setting.entry}/{setting.config_id}"
            entries.append((key, shards, row))
    return entries


def wildcards_of(forget_set):
    """A stand-in for a job's wildcards naming `forget_set` (for input functions)."""
    return types.SimpleNamespace(forget_set=forget_set)


def corrective_logit_groups():
    return {key: shards for key, shards, _ in corrective_logit_entries()}


def corrective_logit_files(wildcards=None):
    return sorted({p for _, shards, _ in corrective_logit_entries() for p in shards})
