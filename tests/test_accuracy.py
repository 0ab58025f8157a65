"""Accuracy is top-1 (argmax of the logits equals the label); margins only where no logits exist."""

import numpy as np
import pytest

from klomflow.metrics.margins import margins_from_logits
from klomflow.reporting.tables import accuracy_rows, top1_correct

# Three classes, four points, one model. Point 1 is top-1 correct with p_y < 1/2 (its
# margin is negative): top-1 counts it, a positive-margin rule would not.
LOGITS = np.array([[[3.0, 0.0, 0.0],
                    [0.0, 1.0, 0.9],
                    [0.0, 0.0, 2.0],
                    [2.0, 0.0, 0.0]]])
LABELS = np.array([0, 1, 0, 1])


def test_top1_counts_unconfident_correct_points():
    assert margins_from_logits(LOGITS, LABELS)[0, 1] < 0
    np.testing.assert_array_equal(top1_correct(LOGITS, LABELS), [[1, 1, 0, 0]])


def test_accuracy_rows_from_logits_and_from_margins():
    # Training points 0-2 (forget point 1, retain 0 and 2), validation point 3.
    rows = accuracy_rows(np.concatenate([LOGITS, LOGITS]), [1], 3, {}, [0, 1], labels=LABELS)
    assert rows[0]["forget_accuracy"] == 1.0
    assert rows[0]["retain_accuracy"] == 0.5
    assert rows[0]["val_accuracy"] == 0.0
    assert not rows[0]["diverged"]
    margin_rows = accuracy_rows(margins_from_logits(LOGITS, LABELS), [1], 3, {}, [0])
    # Named as what it is, never as accuracy.
    assert "forget_accuracy" not in margin_rows[0]
    assert margin_rows[0]["forget_margin_accuracy"] == 0.0
    with pytest.raises(ValueError, match="labels"):
        accuracy_rows(LOGITS, [1], 3, {}, [0])


def test_a_diverged_model_has_no_accuracy():
    logits = np.concatenate([LOGITS, np.full_like(LOGITS, np.nan)])
    rows = accuracy_rows(logits, [1], 3, {}, [0, 1], labels=LABELS)
    assert rows[1]["diverged"] and np.isnan(rows[1]["retain_accuracy"])
    assert not rows[0]["diverged"]


def test_the_accuracy_table_says_which_seconds_are_an_ensembles_share():
    import pandas as pd

    from klomflow.reporting.tables import accuracy_table

    margins = margins_from_logits(np.concatenate([LOGITS, LOGITS]), LABELS)
    runs = pd.DataFrame({"forget_set": "f", "method": "scrub", "config_id": "a", "seed": [0, 1],
                         "unlearning_seconds": [0.5, 0.5], "changed_weights": [3, 4],
                         "unlearning_seconds_amortised": [True, True]})
    table = accuracy_table(None, {}, 3, LABELS, None, {"f": [1]}, {}, [(margins, runs)])
    assert table["unlearning_seconds_amortised"].tolist() == [True, True]
    # Runs tables written before the flag: no claim either way.
    older = accuracy_table(None, {}, 3, LABELS, None, {"f": [1]}, {},
                           [(margins, runs.drop(columns="unlearning_seconds_amortised"))])
    assert "unlearning_seconds_amortised" not in older
