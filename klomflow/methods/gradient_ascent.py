"""gradient_ascent (GA, "NegGrad"): minimise -CE on the forget set.

Paper: e.g. Thudi et al. 2022 / Golatkar et al. 2020 (NegGrad baseline);
grids follow the KLOM benchmark (lr 1e-5..5e-2, epochs 1-10).
Data: forget set only. Plain SGD over shuffled forget batches.
"""

from klomflow.methods.base import Method, cross_entropy, sgd, shuffled_batches


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    for _ in range(params["epochs"]):
        for batch in shuffled_batches(len(data.forget_indices), params["batch_size"],
                                      data.generator, data.device):
            index = data.forget_indices[batch]
            loss = -cross_entropy(model, data.train_x[index], data.train_y[index], data.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


METHOD = Method(
    name="gradient_ascent",
    unlearn=unlearn,
    defaults={"lr": 0.01, "epochs": 3, "batch_size": 64, "momentum": 0.0, "weight_decay": 0.0},
)
