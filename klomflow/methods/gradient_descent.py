"""gradient_descent (GD, "fine-tune"): keep training on the retain set only.

The forget set's influence decays as the model fits the retain set
(catastrophic forgetting). Data: retain set only. SGD with momentum and
weight decay, as in the KLOM benchmark's fine-tuning baseline.
"""

from klomflow.methods.base import Method, cross_entropy_epoch, sgd


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        cross_entropy_epoch(model, optimizer, data, data.retain_indices, params["batch_size"])
    return model


METHOD = Method(
    name="gradient_descent",
    unlearn=unlearn,
    defaults={"lr": 0.01, "epochs": 3, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4},
)
