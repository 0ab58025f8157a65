"""Privacy files and tables: per-point Parquet, privacy.parquet, the paper table and the figure.

The metrics themselves are in klomflow/metrics/privacy/ (numpy and scipy only). Here:
- `utility_accuracies`: the competition's utility ratios need top-1 accuracy
  (argmax of the logits == label). Margins alone cannot give it for more than two
  classes: margin > 0 implies a correct argmax, not the converse (logits
  (2, 1.5, 1.5) with label 0). The workflow passes the logit shards, so the
  accuracy is exact top-1 (`accuracy_definition = "top1"`); when either side has
  no logits (published oracles), both sides use the margin-based lower bound,
  named `"margin_positive"`, so that a ratio never divides one definition by the
  other.
- `equal_count_reference`: the reference row at the methods' number of models.
- every row of a `worst_case` forget set says it is a proxy, as in klom.parquet
  and the KLOM paper tables: `forget_set_kind` and `forget_set_proxy` in
  privacy.parquet and paper_privacy.parquet, the proxy sentence and a marked
  column group in paper_privacy.{md,tex}, and the figure's title.
- the paper privacy table shows, for the settings the KLOM tables selected (by
  held-out KLOM; never by these metrics), KLOM p95 on the forget split next to
  forgetting quality, the competition score and the U-LiRA and LiRA AUCs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from klomflow.metrics import privacy
from klomflow.metrics.privacy.options import SPLITS, PrivacyOptions
from klomflow.reporting.render import proxy_note
from klomflow.reporting.tables import with_forget_set_kinds

NOISE_FLOOR = "oracle_holdout"
# Added after forget_set by klomflow.reporting.tables.with_forget_set_kinds.
KIND_COLUMNS = ["forget_set_kind", "forget_set_proxy"]
KEYS = ["dataset", "model", "forget_set", "method", "config_id", "implementation", "params",
        "diagnostic", "split", "n_points", "n_unlearned", "n_oracle", "n_diverged", "reason"]
COMPETITION_COLUMNS = ["competition_delta", "competition_max_epsilon", "competition_epsilon_mean",
                       "competition_epsilon_p50", "competition_epsilon_p95",
                       "competition_capped_fraction", "competition_range_rule_fraction",
                       "competition_forget_quality", "competition_retain_accuracy_ratio",
                       "competition_val_accuracy_ratio", "competition_score",
                       "competition_accuracy_definition"]
# The paper table's statistics: (column of privacy.parquet or klom.parquet, label, LaTeX label).
PAPER_COLUMNS = [("klom_p95", "KLOM p95", "KLOM p95"),
                 ("competition_forget_quality", "F", "$F$"),
                 ("competition_score", "score", "score"),
                 ("ulira_auc", "U-LiRA AUC", "U-LiRA AUC"),
                 ("lira_auc", "LiRA AUC", "LiRA AUC")]


def table_columns(metrics) -> list:
    columns = list(KEYS)
    if "competition" in metrics:
        columns += COMPETITION_COLUMNS
    for attack in ("ulira", "lira"):
        if attack in metrics:
            columns += [f"{attack}_{name}" for name in privacy.LIRA_COLUMNS]
    return columns


def accuracies(logit_paths, margins, labels, splits, rows=None) -> tuple[dict, str]:
    """({split: mean top-1 accuracy over finite models}, definition) of one model set.

    logit_paths: its logit shards in seed order (or None: margin-based); rows:
    the slice of the concatenated shards that belongs to the set (the held-out
    oracles share shards with the scored ones).
    """
    finite = np.isfinite(np.asarray(margins)).all(axis=1)
    if not logit_paths:
        return privacy.margin_accuracy(np.asarray(margins)[finite], splits), "margin_positive"
    correct = np.concatenate([np.argmax(np.load(path), axis=2) for path in logit_paths])
    if rows is not None:
        correct = correct[rows]
    logits_top1 = correct == np.asarray(labels)[None, :]
    splits = np.asarray(splits)
    logits_top1 = logits_top1[finite]
    return ({split: float(logits_top1[:, splits == split].mean()) if (splits == split).any()
             else np.nan for split in SPLITS}, "top1")


def utility_accuracies(tested_logits, tested, oracle_logits, oracle, labels, splits,
                       tested_rows=None, oracle_rows=None) -> tuple[dict, dict, str]:
    """(accuracy of the models under test, of the scored oracles, definition) for the
    competition's ratios, one definition on both sides.

    Top-1 from the logit shards when both sides have them; when either lacks them, the
    margin-based lower bound on both, since top-1 over a lower bound is no accuracy ratio.
    *_rows: the slices of the concatenated shards that belong to each side.
    """
    if tested_logits and oracle_logits:
        accuracy_tested, definition = accuracies(tested_logits, tested, labels, splits,
                                                 rows=tested_rows)
        accuracy_oracle, _ = accuracies(oracle_logits, oracle, labels, splits, rows=oracle_rows)
        return accuracy_tested, accuracy_oracle, definition
    accuracy_tested, definition = accuracies(None, tested, labels, splits)
    accuracy_oracle, _ = accuracies(None, oracle, labels, splits)
    return accuracy_tested, accuracy_oracle, definition


def equal_count_reference(holdout, n_methods: int) -> tuple[np.ndarray, str | None]:
    """(the held-out oracles' margins the reference row uses, a warning or None).

    The reference row is only comparable with the method rows at their number of models,
    n_originals (unlearned model k started from original k): the competition's buckets end
    at ceil(ln(N - 1)) for N models under test, and its epsilon and the attacks' AUCs under the
    null move with N (docs/privacy.md, "The reference row"). So with more held-out oracles than that
    the first n_methods are used; with fewer, all are, and the warning says the reference row
    is on another scale.
    """
    holdout = np.asarray(holdout)
    if len(holdout) >= n_methods:
        return holdout[:n_methods], None
    return holdout, (
        f"WARNING: {len(holdout)} held-out oracles against {n_methods} models per method "
        f"(models.n_holdout_oracles < n_originals): the reference row's privacy metrics are at "
        f"another number of models (its competition buckets end at max_epsilon "
        f"{privacy.max_epsilon(len(holdout)):g}, a method's at "
        f"{privacy.max_epsilon(n_methods):g}); compare methods with it only roughly, or set "
        f"n_holdout_oracles >= n_originals")


def evaluate_setting(tested, oracle, original, splits, options: PrivacyOptions, identity: dict,
                     accuracy_tested: dict, accuracy_oracle: dict, definition: str,
                     threads: int = 1):
    """(per-point frame, summary rows) of one (forget set, setting) or the reference row."""
    columns, summaries, counts = privacy.privacy_points(tested, oracle, original, splits, options,
                                                        threads=threads)
    utility = privacy.utility_columns(accuracy_tested, accuracy_oracle, definition)
    rows = privacy.summary_rows(summaries, counts, identity, utility, options)
    frame = pd.DataFrame(columns)
    frame["point"] = frame["point"].astype(np.int64)
    frame["split"] = frame["split"].astype("string")
    return frame, rows


def privacy_table(metadata_entries, forget_sets: dict) -> pd.DataFrame:
    """privacy.parquet from the per-point files' metadata (their `rows`), in a fixed order,
    with each forget set's kind and worst-case proxy (`forget_sets`: the config's section)."""
    rows, metrics = [], set()
    for metadata in metadata_entries:
        rows += metadata["rows"]
        metrics |= set(metadata["options"]["metrics"])
    frame = pd.DataFrame(rows)
    columns = table_columns(metrics)
    for column in columns:
        if column not in frame:
            frame[column] = np.nan
    frame = frame[columns]
    frame["split_order"] = frame["split"].map({s: k for k, s in enumerate(SPLITS)})
    frame["reference_first"] = frame["method"] != NOISE_FLOOR
    frame = frame.sort_values(["forget_set", "reference_first", "method", "config_id",
                               "split_order"])
    frame = frame.drop(columns=["split_order", "reference_first"]).reset_index(drop=True)
    return with_forget_set_kinds(frame, forget_sets)


# --- the paper table ------------------------------------------------------------------------


def paper_privacy_frame(privacy_frame: pd.DataFrame, klom_table: pd.DataFrame) -> pd.DataFrame:
    """Forget-split rows of the selected settings (klom.parquet's `selected`) and the reference,
    with their KLOM p95; one row per (forget set, method)."""
    chosen = klom_table[klom_table["selected"] & (klom_table["split"] == "forget")]
    chosen = chosen[["forget_set", "method", "config_id", "diagnostic", "klom_p95"]]
    forget = privacy_frame[privacy_frame["split"] == "forget"]
    forget = forget.drop(columns=["diagnostic", *KIND_COLUMNS], errors="ignore")
    frame = chosen.merge(forget, on=["forget_set", "method", "config_id"], how="left")
    # Every row says whether its forget set is a worst-case proxy (from privacy.parquet, or
    # klom.parquet for a privacy table written before the columns).
    kinds = next((t for t in (privacy_frame, klom_table) if set(KIND_COLUMNS) <= set(t)), None)
    if kinds is not None:
        kinds = kinds.drop_duplicates("forget_set").set_index("forget_set")
        for at, column in enumerate(KIND_COLUMNS, start=1):
            frame.insert(at, column, frame["forget_set"].map(kinds[column]))
    for column, _, _ in PAPER_COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame.sort_values(["forget_set", "method"]).reset_index(drop=True)


def _is_proxy(frame: pd.DataFrame, forget_set: str) -> bool:
    if "forget_set_proxy" not in frame:
        return False
    return any(isinstance(p, str) for p in frame.loc[frame["forget_set"] == forget_set,
                                                      "forget_set_proxy"])


def _forget_set_label(frame: pd.DataFrame, forget_set: str) -> str:
    return f"{forget_set} (proxy)" if _is_proxy(frame, forget_set) else forget_set


def _number(value, digits=3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _order(frame: pd.DataFrame) -> list:
    diagnostic = dict(zip(frame["method"], frame["diagnostic"]))
    return sorted(diagnostic, key=lambda m: (m != NOISE_FLOOR, bool(diagnostic[m]), m))


def _notes(frame: pd.DataFrame) -> list:
    reference = frame[frame["method"] == NOISE_FLOOR]
    n_models = int(reference["n_oracle"].iloc[0]) if len(reference) else None
    folds = (reference["ulira_folds"].dropna() if "ulira_folds" in reference
             else pd.Series(dtype=float))
    folds = f"{int(folds.iloc[0])}-fold" if len(folds) else "K-fold"
    floor = (f"; here F = {_number(reference['competition_forget_quality'].mean(), 2)} "
             "on average over the forget sets" if len(reference) else "")
    return [
        "Each method at the setting the KLOM tables selected (lowest average_95 against the "
        "held-out oracles; never selected on these privacy metrics), on the forget split.",
        f"KLOM p95: against the scored oracles (paper_klom). F: the NeurIPS 2023 competition's "
        f"forgetting quality (mean bucket score of per-example epsilon; higher is better); score: "
        f"F x retain and validation top-1 accuracy ratios to the oracles. U-LiRA / LiRA AUC: "
        f"per-example likelihood-ratio attacks with {'' if n_models is None else n_models} "
        f"oracles and {folds} cross-fitting (0.5 is chance; higher means the models are told "
        "apart from retrained ones).",
        f"`{NOISE_FLOOR}`: held-out oracles in place of the method, a perfect unlearner at this "
        f"number of models: it scores F far below 1 (about 0.18 for exchangeable samples{floor}) "
        "and AUCs near, not at, 0.5; judge methods against this row.",
        "† diagnostic: uses oracles; an upper bound, not a competitor.",
    ] + ([proxy_note(frame)] if proxy_note(frame) else [])


def _cells(frame: pd.DataFrame):
    """(method, is_diagnostic, {(forget_set, column): value}) per row, reference first."""
    values = {(r["forget_set"], r["method"], c): r[c] for _, r in frame.iterrows()
              for c, _, _ in PAPER_COLUMNS}
    diagnostic = dict(zip(frame["method"], frame["diagnostic"]))
    for method in _order(frame):
        yield method, bool(diagnostic[method]), {
            (f, c): values.get((f, method, c)) for f in frame["forget_set"].unique()
            for c, _, _ in PAPER_COLUMNS}


def privacy_markdown(frame: pd.DataFrame) -> str:
    forget_sets = sorted(frame["forget_set"].unique())
    lines = ["# Privacy attacks on each method's selected setting (forget split)", ""]
    lines += [note for note in _notes(frame)] + [""]
    header = ["method"] + [f"{_forget_set_label(frame, f)} {label}" for f in forget_sets
                           for _, label, _ in PAPER_COLUMNS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    for method, diagnostic, cells in _cells(frame):
        name = ("noise floor (oracle_holdout)" if method == NOISE_FLOOR else method)
        row = [name + (" †" if diagnostic else "")]
        row += [_number(cells[(f, c)]) for f in forget_sets for c, _, _ in PAPER_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def _latex(text: str) -> str:
    return str(text).replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def privacy_latex(frame: pd.DataFrame) -> str:
    forget_sets = sorted(frame["forget_set"].unique())
    width = len(PAPER_COLUMNS)
    lines = ["% " + _latex(note).replace("†", "$^\\dagger$") for note in _notes(frame)]
    lines += ["% Needs \\usepackage{booktabs}.",
              "\\begin{tabular}{l" + "r" * (width * len(forget_sets)) + "}", "\\toprule",
              " & " + " & ".join(f"\\multicolumn{{{width}}}{{c}}"
                                 f"{{{_latex(_forget_set_label(frame, f))}}}"
                                 for f in forget_sets) + " \\\\",
              " ".join(f"\\cmidrule(lr){{{2 + k * width}-{1 + (k + 1) * width}}}"
                       for k in range(len(forget_sets))),
              "method & " + " & ".join([" & ".join(t for _, _, t in PAPER_COLUMNS)]
                                       * len(forget_sets)) + " \\\\", "\\midrule"]
    for method, diagnostic, cells in _cells(frame):
        name = "noise floor" if method == NOISE_FLOOR else _latex(method)
        row = [name + ("$^\\dagger$" if diagnostic else "")]
        row += [_number(cells[(f, c)]) for f in forget_sets for c, _, _ in PAPER_COLUMNS]
        lines.append(" & ".join(row).replace("n/a", "--") + " \\\\")
        if method == NOISE_FLOOR:
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


# --- the report figure ----------------------------------------------------------------------


def privacy_figure(frame: pd.DataFrame, forget_set: str):
    """KLOM p95 (forget) against U-LiRA AUC and against F, one point per method (selected
    setting), the noise-floor row marked."""
    from klomflow.reporting.figures import plt  # matplotlib set up for files only
    from klomflow.reporting.styles import method_style

    rows = frame[frame["forget_set"] == forget_set]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, (column, label) in zip(axes, [("ulira_auc", "U-LiRA AUC (forget; 0.5 = chance)"),
                                            ("competition_forget_quality",
                                             "forgetting quality F (higher is better)")]):
        # Each method in its own colour and marker, named in the legend: labels written
        # beside the points overlapped where methods score alike.
        for _, row in rows.iterrows():
            reference = row["method"] == NOISE_FLOOR
            colour, marker = method_style(row["method"])
            name = "noise floor" if reference else row["method"]
            axis.scatter(row["klom_p95"], row[column], marker=marker, s=160 if reference else 50,
                         color=colour, edgecolors="k", linewidths=0.5, zorder=3,
                         label=name + (" †" if row["diagnostic"] else ""))
        axis.set_xlabel("KLOM p95 on the forget split (lower is better)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.tick_params(axis="x", labelrotation=30)
    title = (f"{forget_set}: KLOM against the privacy attacks (selected settings; "
             "star = held-out oracles)")
    if _is_proxy(rows, forget_set):
        proxy = next(p for p in rows["forget_set_proxy"] if isinstance(p, str))
        title += (f"\nworst-case proxy set ({proxy}): chosen to be hard to forget by a cheap "
                  "surrogate; it bounds nothing")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(title)
    figure.tight_layout()
    return figure
