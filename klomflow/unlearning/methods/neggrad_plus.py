"""neggrad_plus (NegGrad+, Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning").

loss = beta * CE(retain batch) - (1 - beta) * CE(forget batch): every retain
batch is paired with the next forget batch, cycling through the (smaller)
forget set. Data: forget and retain sets. One epoch is one pass over the
retain set, as in the authors' code. Batches are reshuffled every pass from
data.generator. tests/methods/test_gradient_methods.py pins one step by hand
(the sign of each term, the beta weighting, which data).

Default 5 epochs where the authors run about 10 on CIFAR: an epoch over the
digits retain set at batch 64 is ~20 steps. config.yaml runs 3, to stay
inside the default run's time budget; its documented grid spans beta only.
"""


from klomflow.unlearning.methods.base import cross_entropy, implement, sgd, shuffled_batches


def forget_batches_forever(data, batch_size):
    """Forget-set batches, reshuffled on every pass, without end."""
    while True:
        yield from shuffled_batches(len(data.forget_indices), batch_size, data.generator,
                                    data.device)


def unlearn(model, data, params):
    model.train()
    optimizer = sgd(model, params)
    beta = params["beta"]
    forget_cycle = forget_batches_forever(data, params["forget_batch_size"])
    for _ in range(params["epochs"]):
        retain_batches = shuffled_batches(len(data.retain_indices), params["batch_size"],
                                          data.generator, data.device)
        for retain_batch, forget_batch in zip(retain_batches, forget_cycle):
            retain = data.retain_indices[retain_batch]
            forget = data.forget_indices[forget_batch]
            loss = beta * cross_entropy(model, data.train_x[retain], data.train_y[retain],
                                        data.device) - (1 - beta) * cross_entropy(
                model, data.train_x[forget], data.train_y[forget], data.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


METHOD = implement("neggrad_plus", unlearn)
