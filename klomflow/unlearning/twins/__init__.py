"""Unlearning a shard's models as one ensemble, for methods that are plain SGD or Adam on a loss.

Each function in this package is the ensemble twin of one method's `unlearn` in
klomflow/unlearning/methods/: the same loss, the same optimiser and hyperparameters, the
same random draws (labels, subsets, batches) made in the same order from each
model's own `data.generator`, applied to M models at once through
`klomflow.training.ensemble.Ensemble`. The loss is the sum of the M per-model losses,
so each model's gradient is its own; one optimiser over the stacked weights
is M per-model optimisers, since SGD (momentum, weight decay) and Adam act
elementwise, and a learning-rate decay multiplies every model's rate alike.
Only float summation order differs from running the method once per model;
tests/test_ensemble_unlearning.py checks the two agree.

Twins: gradient_ascent, gradient_descent, neggrad_plus and random_label
(SGD on cross-entropies), salun (random_label's epochs with salun's masked
step: each model's own saliency mask, from the method's `forget_gradient`
and `saliency_mask` at its original weights, laid out as the stacked
weights), scrub (SGD on per-model distillation KLs against the frozen
originals, an ensemble in evaluation mode, with the method's learning-rate
schedule), bad_teaching (Adam on per-model KLs to targets mixed from the
frozen originals and each model's own incompetent teacher, the method's
`incompetent_teacher`), oracle_matching and dmm (Adam on the MSE to each
model's own target logits, klomflow.unlearning.methods.matching.match_logits; the
targets are prepared per model by the method's own `matching_targets`).
scrub's and bad_teaching's losses are float32 over rows of classes
[M, batch, C], as the methods compute them on one model's [batch, C], so
their float32 rounding is the same.

Every twin runs its models on one training set (model 0's, on its device) and
takes every model through the same number of steps, so it refuses models whose
data differ in training set, device or forget and retain sizes
(`require_alike`, common.py) rather than subsample them silently.

`TOGETHER` maps a method name to (the method version its twin follows, the
twin). A method whose `version` moved on runs one model at a time again until
its twin here is updated: a changed update rule never runs in two versions.
"""

from __future__ import annotations

from klomflow.unlearning.twins.cross_entropy import (
    gradient_ascent,
    gradient_descent,
    neggrad_plus,
    random_label,
    salun,
)
from klomflow.unlearning.twins.distillation import bad_teaching, scrub
from klomflow.unlearning.twins.matching import dmm, oracle_matching

TOGETHER = {
    "bad_teaching": ("1", bad_teaching),
    "gradient_ascent": ("1", gradient_ascent),
    "gradient_descent": ("1", gradient_descent),
    "neggrad_plus": ("1", neggrad_plus),
    "random_label": ("1", random_label),
    "salun": ("1", salun),
    "scrub": ("2", scrub),
    "oracle_matching": ("2", oracle_matching),
    "dmm": ("2", dmm),
}


def together(method):
    """The ensemble twin of `method`, or None if it has none for its current version.

    A user method (one with a `source`) has none: it runs one model at a time."""
    if getattr(method, "source", None) is not None:
        return None
    version, function = TOGETHER.get(method.name, (None, None))
    return function if version == method.version else None
