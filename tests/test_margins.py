import numpy as np

from klomflow.metrics.margins import margins_from_logits, margins_reference


def test_margins_match_the_direct_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    np.testing.assert_allclose(margins_from_logits(logits, labels),
                               margins_reference(logits, labels), rtol=1e-4, atol=1e-4)


def test_margin_is_true_logit_minus_logsumexp_of_the_others():
    logits = np.array([[2.0, 0.0, 0.0]], dtype=np.float32)
    expected = 2.0 - np.log(2.0)
    assert margins_from_logits(logits, np.array([0]))[0] == np.float32(expected)


def test_margins_are_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 999.0], [-5000.0, 5000.0, 0.0]])
    margins = margins_from_logits(logits, np.array([0, 0]))
    assert np.isfinite(margins).all()
    np.testing.assert_allclose(margins, [1.0, -10000.0], rtol=1e-5)
