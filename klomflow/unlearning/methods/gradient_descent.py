"""gradient_descent (GD, "fine-tune"): keep training on the retain set only.

The forget set's influence decays as the model fits the retain set
(catastrophic forgetting). Data: retain set only. SGD with momentum and
weight decay, as in the KLOM benchmark's fine-tuning baseline; the retain
batches are reshuffled every epoch from data.generator (each unlearned model
its own order). tests/methods/test_gradient_methods.py pins one step by hand.
"""

from klomflow.unlearning.methods.base import cross_entropy_epoch, implement, sgd


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        cross_entropy_epoch(model, optimizer, data, data.retain_indices, params["batch_size"])
    return model


METHOD = implement("gradient_descent", unlearn)
