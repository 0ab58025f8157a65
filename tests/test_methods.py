"""Every method in the lookup table honours the interface and changes the weights."""

import copy

import numpy as np
import pytest
import torch
from conftest import make_tiny_problem, max_weight_change, weights_of

from klomflow.unlearning.methods import METHODS

# The tiny problem's blobs are so separable that ssd's default selection threshold
# (alpha = 100) selects no weight; on digits classes it does (README table).
TINY_PROBLEM_PARAMS = {"ssd": {"alpha": 1.0}}


def synthetic_extras(method, data, model):
    """Inputs a method declares in `needs`, made up with the right shapes."""
    rng = np.random.default_rng(0)
    n_points = len(data.train_y) if data.__dict__.get("eval_x") is None else len(data.eval_x)
    extras = {}
    for name in method.needs:
        if name == "holdout_oracle_logits":
            extras[name] = rng.normal(size=(12, n_points, data.n_classes)).astype(np.float32)
        elif name == "datamodel_rows":
            extras[name] = rng.normal(0, 0.05, (len(data.forget_indices), n_points,
                                                data.n_classes)).astype(np.float32)
        else:
            raise AssertionError(f"{method.name} needs {name!r}: teach this test to make it")
    return extras


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_changes_the_weights_unless_it_does_nothing(name):
    method = METHODS[name]
    # A whole class suits every method; some (ssd) select no weight for a few random points.
    model, data = make_tiny_problem(forget="class")
    data.extras = synthetic_extras(method, data, model)
    before = weights_of(model)
    with torch.random.fork_rng(devices=[]):
        params = method.defaults | TINY_PROBLEM_PARAMS.get(name, {})
        result = method.unlearn(copy.deepcopy(model), data, params)
    if getattr(method, "outputs_logits", False):
        assert np.isfinite(np.asarray(result)).all()
        return
    if name == "do_nothing":
        assert max_weight_change(before, result) == 0.0
    else:
        assert max_weight_change(before, result) > 0.0, f"{name} left the weights unchanged"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_is_deterministic_given_its_generator(name):
    method = METHODS[name]
    outputs = []
    for _ in range(2):
        model, data = make_tiny_problem(forget="class" if method.class_only else "random")
        data.extras = synthetic_extras(method, data, model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            result = method.unlearn(model, data, dict(method.defaults))
        outputs.append(np.asarray(result) if isinstance(result, np.ndarray)
                       else weights_of(result))
    if isinstance(outputs[0], np.ndarray):
        np.testing.assert_array_equal(*outputs)
    else:
        for key in outputs[0]:
            assert torch.equal(outputs[0][key], outputs[1][key]), f"{name}: {key} differs"


def test_every_method_module_documents_itself():
    for name, method in METHODS.items():
        module = __import__(method.unlearn.__module__, fromlist=["_"])
        assert module.__doc__ and len(module.__doc__) > 80, f"{name} needs a real docstring"
        assert method.name == name
