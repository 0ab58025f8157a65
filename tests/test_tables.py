"""Per-point KLOM files and their summary rows, on margins made up here."""

import numpy as np
import pytest

from klomflow.klom import KlomOptions, klom_per_point
from klomflow.tables import klom_points

OPTIONS = KlomOptions(bins=10)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_one_diverged_model_is_left_out_of_klom(numpy_rng, bad_value):
    """A setting with one NaN (or infinite) run among finite ones scores the finite ones."""
    n_train, n_val = 30, 10
    unlearned = numpy_rng.normal(1.0, 1.0, size=(6, n_train + n_val))
    oracle = numpy_rng.normal(0.0, 1.0, size=(5, n_train + n_val))
    unlearned[2, 7] = bad_value  # one value is enough to make the whole run diverged
    forget = np.array([1, 7, 20])
    frame, counts = klom_points(unlearned, oracle, forget, n_train, OPTIONS)
    assert counts == {"n_unlearned": 5, "n_oracle": 5, "n_diverged": 1}
    finite_rows = np.delete(unlearned, 2, axis=0)
    np.testing.assert_array_equal(frame["klom"].to_numpy(),
                                  klom_per_point(finite_rows, oracle, OPTIONS))
    assert np.isfinite(frame["klom"]).all()
    assert list(frame.loc[frame["split"] == "forget", "point"]) == forget.tolist()
