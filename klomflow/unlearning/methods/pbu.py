"""pbu (Panda, Sourav & Prathosh 2025, "Partially Blinded Unlearning: Class Unlearning
for Deep Networks from a Bayesian Perspective", AAAI; arXiv 2403.16246).

Update: minimise, over forget batches,
    alpha * (-CE on F) + beta * (theta - theta0)^T diag(Fisher_F) (theta - theta0)
                       + gamma * ||theta - theta0||^2
with Adam. The first term destroys the forget class; the Fisher (Mahalanobis) and L2
terms hold the weights near theta0 ("stability regularisation").

Data: forget set only (no retain data: "partially blinded"). Class unlearning only.

As in the authors' code (github.com/Shash12-ship/pbu, utils/regularizer.py and the
MNIST notebook): the Fisher is nngeometry's FIM(variant="classif_logits",
representation=PMatDiag) of the original model on the forget-class loader, i.e. the
diagonal of the true Fisher, mean over forget points of sum_c p(c|x) (d log p(c|x) /
d theta)^2 at theta0, computed once before training
(`klomflow.unlearning.methods.fisher`, shared with fisher_forgetting; evaluation mode, as
the authors put BatchNorm in eval mode for it).
Both penalties run over every parameter; the CE is the batch mean; training mode.
The paper's alpha 721, beta 90, gamma 4001 (tuned on MNIST) stay the defaults, as do
Adam, batch 64 and 5 epochs.
Difference: the learning rate, 2e-3 instead of 1e-4. On MNIST the authors get ~94 forget
batches per epoch, ~470 Adam steps in 5 epochs; a digits class (~145 points) gives 3
batches per epoch, 15 steps, each moving a weight by about lr: at 1e-4 nothing is
forgotten (forget accuracy 0.999 -> 0.97). Measured on the default workflow (class 3,
5 models): lr 2e-3 gives forget accuracy 0.05 (original 0.999) with validation accuracy
on the other classes 0.94 (original 0.977).
Caveats, from the same measurements: the result is a transient of the optimisation, not
a minimum. -CE is unbounded; with gamma 4001 long training runs away (other classes fall
to ~0.27), with gamma >= 5000 it settles near theta0 (forget accuracy >= 0.94), so lr x steps
decides, and single runs vary (forget accuracy 0.0-0.74 over shuffling seeds, mean 0.17).
At these constants the Fisher term is at most beta * max F / gamma ~ 0.002 of the L2
term (F on the forget class <= 0.09, mean 7e-4), so beta hardly matters here.
"""

from __future__ import annotations

import torch

from klomflow.unlearning.methods.base import cross_entropy, implement, shuffled_batches
from klomflow.unlearning.methods.fisher import fisher_diagonal


def pbu_loss(model, original: dict, fisher: dict, x, y, params: dict, device):
    """(total, (negative CE, Fisher term, L2 term)) of one forget batch.

    `original` and `fisher` map parameter names to theta0 and to the Fisher diagonal;
    total = alpha * negative CE + beta * Fisher term + gamma * L2 term.
    """
    negative_ce = -cross_entropy(model, x, y, device)
    fisher_term = torch.zeros((), device=device)
    l2_term = torch.zeros((), device=device)
    for name, weight in model.named_parameters():
        change = (weight - original[name]).pow(2)
        fisher_term = fisher_term + (fisher[name] * change).sum()
        l2_term = l2_term + change.sum()
    total = (params["alpha"] * negative_ce + params["beta"] * fisher_term
             + params["gamma"] * l2_term)
    return total, (negative_ce, fisher_term, l2_term)


def unlearn(model, data, params):
    original = {name: value.detach().clone() for name, value in model.named_parameters()}
    fisher = fisher_diagonal(model, data.forget_x, params["fisher_batch_size"], data.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    model.train()
    for _ in range(params["epochs"]):
        for batch in shuffled_batches(len(data.forget_indices), params["batch_size"],
                                      data.generator, data.device):
            index = data.forget_indices[batch]
            loss, _ = pbu_loss(model, original, fisher, data.train_x[index],
                               data.train_y[index], params, data.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


METHOD = implement("pbu", unlearn)
