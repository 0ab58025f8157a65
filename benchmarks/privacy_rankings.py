"""Do KLOM, the competition's forgetting quality and U-LiRA rank the methods alike?

Run after a workflow run with privacy metrics: `python benchmarks/privacy_rankings.py
[results_dir]`. Per forget set, over the methods at their selected settings (the paper
privacy table; diagnostics and the reference row left out), it prints each method's rank
by forget-split KLOM p95 (lower is better), by forgetting quality F (higher is better) and
by U-LiRA AUC (lower is better), and Spearman's rank correlation between the three
rankings (ties share their average rank).
"""

import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

CRITERIA = {"KLOM p95": ("klom_p95", True), "F": ("competition_forget_quality", False),
            "U-LiRA AUC": ("ulira_auc", True)}


def main():
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    frame = pd.read_parquet(results / "tables" / "paper_privacy.parquet")
    frame = frame[(frame["method"] != "oracle_holdout") & ~frame["diagnostic"].astype(bool)]
    for forget_set, rows in frame.groupby("forget_set"):
        rows = rows.dropna(subset=[column for column, _ in CRITERIA.values()])
        ranks = pd.DataFrame({name: rows[column].rank(ascending=ascending)
                              for name, (column, ascending) in CRITERIA.items()})
        ranks.index = rows["method"]
        print(f"\n{forget_set} ({len(rows)} methods): ranks, 1 = best")
        print(ranks.sort_values("KLOM p95").to_string())
        names = list(CRITERIA)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                rho = spearmanr(ranks[first], ranks[second]).statistic
                print(f"Spearman {first} vs {second}: {rho:.2f}")


if __name__ == "__main__":
    main()
