"""gradient_ascent (GA, "NegGrad"): minimise -CE on the forget set.

Paper: e.g. Thudi et al. 2022 / Golatkar et al. 2020 (NegGrad baseline);
grids follow the KLOM benchmark (lr 1e-5..5e-2, epochs 1-10).
Data: forget set only. Plain SGD over shuffled forget batches.

As data-unlearning-bench's `ascent_forget` (the KLOM paper's gradient ascent): SGD
without momentum or weight decay, batches of 64, training mode, the batch-mean
cross-entropy negated. Difference: the forget batches are reshuffled every epoch from
data.generator, so each unlearned model sees its own order; theirs come from an
unshuffled loader, the same fixed order for every model.
tests/methods/test_gradient_methods.py pins one step by hand.
"""

from klomflow.unlearning.methods.base import cross_entropy_epoch, implement, sgd


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        cross_entropy_epoch(model, optimizer, data, data.forget_indices, params["batch_size"],
                            sign=-1.0)
    return model


METHOD = implement("gradient_ascent", unlearn)
