"""laf (Label-Agnostic Forgetting; Shen, Zhang, Zhao, Bialkowski, Chen and Xu 2024,
"Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models", ICLR).

Unlearning without labels. The representation e(x) is the input of the model's last
nn.Linear (the head); the head is never updated.
1. Two VAEs on the original model's representations, each model its own: h_r on the
   remaining data and h_f on the forget set. Each: encoder d-128-32 to mean and log
   variance heads of `latent_dims`, z = mean + std * noise, decoder latent-32-128-d with a
   sigmoid output; loss = summed squared error per point, averaged over the batch, plus
   `vae_kl_weight` * KL(q(z|e) || N(0, I)); Adam at `vae_lr`, `vae_epochs` epochs.
2. `epochs` epochs, each zipping a shuffled forget-set batching with a shuffled retain-set
   batching (batches of `batch_size`) and stopping at the shorter: ceil(|F| / batch_size)
   steps, each with one forget batch and one retain batch, and two updates in order:
   - extractor unlearning: m(x) = ||h(e(x)) - e(x)||^2 (summed over the d features), with
     h_r on the retain batch and h_f on the forget batch;
     L_UE = sum_R exp(m / (m + 1)) - sum_F exp(m / (m + 1)), Adam at `lr_ue`;
   - representation alignment, on representations recomputed after that update:
     dist = 1 - cos(e(x), e_original(x));
     L_RA = sum_R dist - B_R * ln sum_F exp(dist / `temperature`), Adam at `lr_ra`.
   Both Adams hold every parameter, with their own moment states; the head gets no
   gradient from either loss, and Adam skips a parameter without one, so it keeps its bits.
Data: the training inputs, the forget and retain indices; never a label (unless `repair`).

As in the authors' code (ShaofeiShen768/LAF @ bda3694: Model.py VariationalAutoencoder,
Train.py vae_train / vae_loss_function, VUnlearning.py extractor_unlearning; facts in
docs/methods.md): the model is in evaluation mode throughout (their VAE stage leaves it
there), so BatchNorm uses and keeps its running statistics; the VAEs sample their noise in
every forward pass, also when frozen; the KL term is -0.5 * sum(ln(std^2 + 1e-8) + 1 -
mean^2 - std^2) / batch; dist is torch's cosine embedding loss with target 1; h_r is
trained before h_f; the original model is the frozen teacher. Randomness (VAE
initialisation, noise, shuffles) comes from `data.generator`. Everything runs in float32
(the model's dtype), without mixed precision.

Options the authors' code leaves open, recorded here:
- `remain_vae_data`: "train" (default, the authors' code: h_r learns all of D, the forget
  set included, from their `train` loader) or "retain" (D \\ F, as the paper's description
  of h_r as modelling the remaining data reads).
- `repair` (LAF+R, off by default as the paper's main LAF): after unlearning, cross-entropy
  on the retain set *with its labels*, Adam on the head only, in the same zipped loop
  (ceil(|F| / batch_size) retain batches per epoch). The authors give neither its epochs
  nor its learning rate; `repair_epochs` 10 and `repair_lr` 1e-4 (their training rate)
  are guesses. With `repair` off no label is read.
Where this departs from the authors' code:
- The representation is the input of the last nn.Linear (the MLP's last hidden ReLU
  output, 256 wide by default; ResNet-9's pooled 128 features), where the authors add a
  256-wide linear `fc1` to their CNN and ResNet-18 and use its (linear) output. The VAE's
  first and last layers take this width d instead of their 256; its inner widths are
  theirs. Post-ReLU features are unbounded against the decoder's sigmoid (theirs are too),
  so m can be far above 1, where exp(m / (m + 1)) flattens: the log gives m's medians.
- The head is the last nn.Linear and what follows it; their CNN's head is two linears.
Defaults, digits scale: the authors' CNN row for random data removal (hyperparameter.md):
latent 8, temperature 5, lr_ue 5e-5, lr_ra 1e-4, batch 32, VAE 10 epochs at 1e-3 with KL
weight 0.025. Their MNIST forget set (40% of digits 5-9, ~12,000 points) gives ~375 steps
an epoch, 20 epochs; 60 digits give 2. `epochs` is therefore 100. Measured on the
default run's random_60 (docs/methods.md): KLOM stays near do_nothing's, since h_f,
fitted with 20 steps to 60 points, reconstructs them badly from the start (m ~30, where
exp(m / (m + 1)) is flat) and L_RA sits at its floor; ten times the rates moves every
split's margins alike, not the forget set's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from klomflow.unlearning.methods.base import implement, shuffled_batches

# The authors' VAE widths between the representation and the latent (Model.py).
VAE_WIDTHS = (128, 32)


class RepresentationVae(nn.Module):
    """The authors' VAE on [n, width] representations; noise from an explicit generator."""

    def __init__(self, width: int, latent_dims: int):
        super().__init__()
        inner, narrow = VAE_WIDTHS
        self.encoder = nn.Sequential(
            nn.Linear(width, inner), nn.ReLU(), nn.Linear(inner, narrow), nn.ReLU()
        )
        self.mean = nn.Linear(narrow, latent_dims)
        self.log_variance = nn.Linear(narrow, latent_dims)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dims, narrow),
            nn.ReLU(),
            nn.Linear(narrow, inner),
            nn.ReLU(),
            nn.Linear(inner, width),
            nn.Sigmoid(),
        )

    def forward(self, e, generator: torch.Generator):
        """(reconstruction [n, width], mean [n, latent], std [n, latent])."""
        hidden = self.encoder(e)
        mean = self.mean(hidden)
        std = torch.exp(0.5 * self.log_variance(hidden))
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return self.decoder(mean + std * noise), mean, std


def vae_loss(reconstruction, e, mean, std, kl_weight: float):
    """Summed squared error per point plus kl_weight * KL to N(0, I), both over the batch."""
    n = len(e)
    squared_error = (reconstruction - e).pow(2).sum() / n
    divergence = -0.5 * (torch.log(std.pow(2) + 1e-8) + 1 - mean.pow(2) - std.pow(2)).sum() / n
    return squared_error + kl_weight * divergence


def head_layer(model) -> nn.Linear:
    """The model's last nn.Linear: the head, whose input is the representation."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(
            f"laf: {type(model).__name__} has no nn.Linear whose input could be the representation"
        )
    return linears[-1]


def representations(model, x):
    """e [n, d]: what the model's head receives for each row of x (with gradients)."""
    captured = []
    hook = head_layer(model).register_forward_hook(
        lambda module, args, output: captured.append(args[0])
    )
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].flatten(1)


def train_vae(e, params: dict, generator: torch.Generator):
    """A RepresentationVae fitted to the fixed representations e [n, d]; returned frozen."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear initialises from the global generator
        vae = RepresentationVae(e.shape[1], params["latent_dims"])
    vae.to(device=e.device, dtype=e.dtype).train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=params["vae_lr"])
    losses = []
    for _ in range(params["vae_epochs"]):
        losses = []
        for batch in shuffled_batches(len(e), params["batch_size"], generator, e.device):
            reconstruction, mean, std = vae(e[batch], generator)
            loss = vae_loss(reconstruction, e[batch], mean, std, params["vae_kl_weight"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    vae.eval().requires_grad_(False)
    return vae, sum(losses) / max(len(losses), 1)


def reconstruction_errors(vae, e, generator):
    """m [n]: ||h(e) - e||^2 summed over the features, the gradient flowing through h."""
    reconstruction, _, _ = vae(e, generator)
    return (reconstruction - e).pow(2).sum(1)


def extractor_unlearning_loss(retain_errors, forget_errors):
    """L_UE = sum_R exp(m / (m + 1)) - sum_F exp(m / (m + 1))."""
    return (
        torch.exp(retain_errors / (retain_errors + 1)).sum()
        - torch.exp(forget_errors / (forget_errors + 1)).sum()
    )


def alignment_loss(retain_e, retain_teacher, forget_e, forget_teacher, temperature: float):
    """L_RA = sum_R dist - B_R * ln sum_F exp(dist / temperature), dist = 1 - cosine."""
    retain_distance = F.cosine_embedding_loss(
        retain_e,
        retain_teacher,
        torch.ones(len(retain_e), device=retain_e.device),
        reduction="none",
    )
    forget_distance = F.cosine_embedding_loss(
        forget_e,
        forget_teacher,
        torch.ones(len(forget_e), device=forget_e.device),
        reduction="none",
    )
    return retain_distance.sum() - len(retain_distance) * torch.logsumexp(
        forget_distance / temperature, 0
    )


def laf_step(
    model,
    teacher,
    remain_vae,
    forget_vae,
    retain_x,
    forget_x,
    optimizers,
    temperature: float,
    generator: torch.Generator,
):
    """One extractor-unlearning update, then one representation-alignment update.

    optimizers: (Adam at lr_ue, Adam at lr_ra). Returns (L_UE, L_RA, m on R, m on F).
    """
    unlearning_optimizer, alignment_optimizer = optimizers
    retain_errors = reconstruction_errors(remain_vae, representations(model, retain_x), generator)
    forget_errors = reconstruction_errors(forget_vae, representations(model, forget_x), generator)
    unlearning = extractor_unlearning_loss(retain_errors, forget_errors)
    unlearning_optimizer.zero_grad(set_to_none=True)
    unlearning.backward()
    unlearning_optimizer.step()

    with torch.no_grad():
        retain_teacher = representations(teacher, retain_x)
        forget_teacher = representations(teacher, forget_x)
    alignment = alignment_loss(
        representations(model, retain_x),
        retain_teacher,
        representations(model, forget_x),
        forget_teacher,
        temperature,
    )
    alignment_optimizer.zero_grad(set_to_none=True)
    alignment.backward()
    alignment_optimizer.step()
    return (
        float(unlearning.detach()),
        float(alignment.detach()),
        retain_errors.detach(),
        forget_errors.detach(),
    )


def zipped_batches(data, batch_size: int):
    """Pairs (forget batch, retain batch) of training indices: both sets shuffled, batched,
    and zipped, so the forget set sets the count (the authors' zip of two loaders)."""
    forget = shuffled_batches(len(data.forget_indices), batch_size, data.generator, data.device)
    retain = shuffled_batches(len(data.retain_indices), batch_size, data.generator, data.device)
    return [(data.forget_indices[f], data.retain_indices[r]) for f, r in zip(forget, retain)]


def extractor_unlearning(model, remain_vae, forget_vae, data, params):
    """Stage 2 in place on `model` (evaluation mode); returns per-epoch mean (L_UE, L_RA)
    and the m medians (R, F) of the first and the last step."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    optimizers = (
        torch.optim.Adam(model.parameters(), lr=params["lr_ue"]),
        torch.optim.Adam(model.parameters(), lr=params["lr_ra"]),
    )
    history, medians = [], []
    for _ in range(params["epochs"]):
        losses = []
        for forget_index, retain_index in zipped_batches(data, params["batch_size"]):
            *step_losses, retain_errors, forget_errors = laf_step(
                model,
                teacher,
                remain_vae,
                forget_vae,
                data.train_x[retain_index],
                data.train_x[forget_index],
                optimizers,
                params["temperature"],
                data.generator,
            )
            losses.append(step_losses)
            medians.append((float(retain_errors.median()), float(forget_errors.median())))
        history.append(tuple(sum(column) / len(column) for column in zip(*losses)))
    return history, (medians[0], medians[-1]) if medians else ()


def repair_head(model, data, params) -> None:
    """LAF+R: cross-entropy on retain batches (with labels), Adam on the head only."""
    head = head_layer(model)
    optimizer = torch.optim.Adam(head.parameters(), lr=params["repair_lr"])
    for _ in range(params["repair_epochs"]):
        for _, retain_index in zipped_batches(data, params["batch_size"]):
            loss = F.cross_entropy(model(data.train_x[retain_index]), data.train_y[retain_index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)


def vae_data_indices(data, remain_vae_data: str):
    """The training indices h_r learns: all of D ("train") or D \\ F ("retain")."""
    if remain_vae_data == "train":
        return torch.arange(len(data.train_x), device=data.device)
    if remain_vae_data == "retain":
        return data.retain_indices
    raise ValueError(f"laf: remain_vae_data must be 'train' or 'retain', got {remain_vae_data!r}")


def unlearn(model, data, params):
    model.eval()
    with torch.no_grad():
        remain_e = representations(
            model, data.train_x[vae_data_indices(data, params["remain_vae_data"])]
        )
        forget_e = representations(model, data.forget_x)
    remain_vae, remain_loss = train_vae(remain_e, params, data.generator)
    forget_vae, forget_loss = train_vae(forget_e, params, data.generator)
    history, medians = extractor_unlearning(model, remain_vae, forget_vae, data, params)
    if params["repair"]:
        repair_head(model, data, params)
    model.zero_grad(set_to_none=True)
    if history:
        data.log(
            f"laf: VAE loss (last epoch) h_r {remain_loss:.4g}, h_f {forget_loss:.4g}; "
            f"L_UE {history[0][0]:.4g} -> {history[-1][0]:.4g}, L_RA {history[0][1]:.4g} "
            f"-> {history[-1][1]:.4g}; median m on R / F, first step "
            f"{medians[0][0]:.4g} / {medians[0][1]:.4g}, last {medians[1][0]:.4g} / "
            f"{medians[1][1]:.4g}"
        )
    return model


METHOD = implement("laf", unlearn)
