"""dmm (Datamodel Matching; Georgiev et al. 2024, "Attribute-to-Delete:
Machine Unlearning via Datamodel Matching", arXiv 2410.23232).

Oracle matching with datamodel predictions in place of oracles: fine-tune
the original model by MSE towards
    target(x) = f_original(x) - multiplier * sum over i in F of beta[i, x, :]
on F (repeated forget_mult times) plus a random retain sample of
retain_mult * |F| points; Adam, learning rate times lr_decay per epoch
(klomflow.unlearning.methods.matching.match_logits, shared with oracle_matching).
Data: forget set, a sample of the retain set, the datamodel rows of F
(`datamodel_rows`: beta[F], [|F|, n_points, n_classes]; only the fine-tuning
points' columns are read).

Differences from the authors' code: f_original is the original model's
logits in evaluation mode, computed once before fine-tuning (the authors
evaluate the wrapped original on each batch); the retain sample and batch
order come from data.generator (see oracle_matching).
"""

from __future__ import annotations

from klomflow.training.datamodels import predicted_logits
from klomflow.training.loop import predict_logits
from klomflow.unlearning.methods.base import implement
from klomflow.unlearning.methods.matching import (
    check_datamodel_rows,
    finetuning_indices,
    match_logits,
)


def matching_targets(model, data, params):
    """(fine-tuning indices [n], the datamodel-predicted logits there [n, C]).

    Draws the retain sample from `data.generator`; reads `model` (the original,
    in evaluation mode) before any fine-tuning.
    """
    rows = data.extras["datamodel_rows"]
    check_datamodel_rows(rows, data)
    indices = finetuning_indices(data, params)
    original = predict_logits(model, data.train_x[indices.to(data.device)], data.device)
    # Training index i is evaluation point i (training points come first).
    targets = predicted_logits(
        original, rows, points=indices.numpy(), multiplier=params["multiplier"]
    )
    return indices, targets


def unlearn(model, data, params):
    indices, targets = matching_targets(model, data, params)
    return match_logits(model, data, indices, targets, params)


METHOD = implement("dmm", unlearn)
