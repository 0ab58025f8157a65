"""dm_direct (DM-Direct; Georgiev et al. 2024, "Attribute-to-Delete: Machine
Unlearning via Datamodel Matching", arXiv 2410.23232).

No training: output the datamodel prediction of the retrained model's logits,
    logits(x) = f_original(x) - multiplier * sum over i in F of beta[i, x, :],
on every evaluation point (klomflow.training.datamodels.predicted_logits). Data: the
forget set's indices, the datamodels, the original model's own outputs.

It returns logits, not weights (`outputs_logits=True`): the workflow scores
them as the unlearned model's outputs and keeps the original's weights.
Needs `datamodel_rows` (F's rows beta[F], [|F|, n_points, n_classes], read
through a memory map where the caller provides one) and `data.eval_x`.
Where the authors wrap the model so that it subtracts the correction of the
point index it is given, this returns the table of corrected logits; the
numbers are the same.
"""

from __future__ import annotations

import numpy as np

from klomflow.training.datamodels import predicted_logits
from klomflow.training.loop import predict_logits
from klomflow.unlearning.methods.base import implement
from klomflow.unlearning.methods.matching import check_datamodel_rows


def unlearn(model, data, params):
    if data.eval_x is None:
        raise ValueError("dm_direct needs data.eval_x, the evaluation points it outputs logits for")
    rows = data.extras["datamodel_rows"]
    check_datamodel_rows(rows, data, len(data.eval_x))
    original = predict_logits(model, data.eval_x, data.device)  # [n_points, n_classes]
    return predicted_logits(original, rows, multiplier=params["multiplier"]).astype(np.float32)


METHOD = implement("dm_direct", unlearn)
