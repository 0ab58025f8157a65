"""The `worst_case` proxy `bilevel`: Fan et al.'s bilevel forget-set search.

Fan et al., "Challenging Forgets: Unveiling the Worst-Case Forget Sets in
Machine Unlearning" (ECCV 2024, arXiv 2403.07362), data-wise code
OPTML-Group/Unlearn-WorstCase @ fc727ce, folder data-wise/ (file:line below
refer to it). docs/forget_sets.md section 6 summarises it.

Relaxed selection w in [0, 1]^n with sum w = size. Each outer step:
1. restart the lower level's model from one fixed starting point: with
   `lower_level: fine_tune` (the reference's `--unlearn w_FT`, its README's
   example) the pilot model, reloaded (main_selmu.py:104-111); with
   `lower_level: retrain` (`w_retrain`, the reference's argparse default,
   arg_parser.py:76-78) a model re-initialised from scratch, every nn.Linear
   and nn.Conv2d weight Xavier-uniform and its bias zero (main_selmu.py:106-108,
   utils.py:395-399 `weights_init`; no pilot is loaded, main_selmu.py:85-86).
   The reference re-seeds its global generators after every outer step
   (utils.py:278-301: `update_w` calls `setup_seed(seed)` for each loader it
   builds), so its re-initialisation draws the same weights at every step;
   here they are drawn once, on the CPU, from a generator seeded with `seed`;
2. "unlearn" by weighting the points' losses with their complement weights:
   `inner_epochs` epochs of signSGD, theta <- theta - lr sign(grad), on the
   batch loss sum_i (1 - w_i) CE_i over every training point, in train mode
   (unlearn/FT.py:146-182, trainer/train.py:111-138 `w_train`: the same loop
   for both lower levels; utils.py:381-392: `sign_step` ignores the SGD
   momentum and weight decay it is built with; the MultiStepLR milestones
   91,136 are never reached, so the rate is constant);
3. upper level, w <- Proj(w - w_lr (CE_i(theta_K) + 2 gamma w))
   (unlearn/impl.py:331-345): w grows where the unlearned model still fits
   the point, so the set drifts to the points hardest to forget. dtheta/dw is
   dropped (the sign step has no useful derivative).
Proj is the Euclidean projection onto {0 <= w <= 1, sum w = size} by bisection
on a shift mu, w = clip(a - mu, 0, 1) (utils.py:403-425). w starts as the
indicator of a random size-subset (utils.py:306-318 with dataset.py:60-88);
the set is the top `size` of the final w (main_evalmu.py:42-51 reads the last
recorded w, the one after the last upper step). Every ROUNDING_INTERVAL (20)
outer steps, w is replaced by the indicator of its top `size` before the next
step (main_selmu.py:35-36 and 145-146, `feq_to_bi`, default 20, capped at
the number of steps); the reference records w before it rounds, so rounding
after the last step changes nothing, and with at most 20 steps none happens.

Where this module differs from the reference, and why:
- Default lower level `fine_tune`, where the reference's argparse default is
  `w_retrain`: its README's example runs `w_FT`, and the proxy was
  first specified with the pilot-based lower level (the
  default before `retrain` was added, so existing sets stay as they were).
- Default steps: 10 outer, 2 inner epochs, rates 0.01, which match neither of
  the reference's configurations (argparse: 10 outer, 10 inner, theta_lr 0.01;
  README example: 2 outer, 2 inner, theta_lr 1e-3); every value is a key.
- Batch order: one CPU torch.Generator seeded once and drawn on through all
  outer steps, so each outer step sees fresh shuffles. The reference re-seeds
  after every outer step, so every step replays the same shuffles.
- `lower_level: retrain` resets every parameter and buffer that the
  re-initialisation does not draw (BatchNorm weights, biases and running
  statistics) to the given model's values at every outer step; the reference
  never reloads them, so they carry over from one outer step to the next.
  klomflow's MLP has none; its ResNet-9 has BatchNorm.
- The upper step's per-point losses are computed in eval mode, in order, on
  the tensors as given. The reference evaluates them in train mode on its
  shuffled, augmented (random crop, flip) training loader, so with batch
  normalisation a point's loss depends on the batch it lands in and on the
  augmentation draw; eval mode makes it a function of the point and the
  weights, as the margins that KLOM scores are.
- No augmentation in the lower level either: klomflow trains without it.
- The initial subset comes from numpy.random.default_rng(seed) (the reference:
  np.random.RandomState(seed - 1)).
- w is float64 and the bisection runs to float64 resolution (the reference
  keeps w in float32 and stops when the bracket on mu is below 1e-5 or after
  100 halvings, so sum w misses `size` by up to n 1e-5).
- Ties in the final top-`size` (and in the rounding) go to the smaller index
  (torch.topk leaves them unspecified); many w sit exactly at 1 after the
  projection.
- float32 throughout, also on CUDA (klomflow trains in bfloat16 there):
  sign(grad) of near-zero gradients is what the lower level follows.
On a GPU, sign(grad) of near-zero gradients can still differ between runs;
compare runs by Jaccard overlap, not bytes (docs/forget_sets.md, section 6).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from klomflow.forget_sets.ranking import check_size, rank_order
from klomflow.training.loop import batches

# Halvings of the bracket on mu; float64 resolution is reached in about 60.
MAX_BISECTIONS = 200
# Points per forward pass when scoring the upper level (no gradients).
EVAL_BATCH_SIZE = 1024
# The lower levels: `fine_tune` restarts from the pilot (the reference's w_FT),
# `retrain` from a fresh Xavier initialisation (its w_retrain).
LOWER_LEVELS = ("fine_tune", "retrain")
# The reference's `feq_to_bi`: w becomes the indicator of its top `size` after
# every this many outer steps.
ROUNDING_INTERVAL = 20


def project_capped_simplex(values, size) -> np.ndarray:
    """Euclidean projection of `values` onto {0 <= w <= 1, sum w = size}.

    The projection is clip(values - mu, 0, 1) for the mu where the sum is
    `size`; the sum falls continuously from n to 0 as mu runs from
    min(values) - 1 to max(values), so bisection finds it (to float64
    resolution, then exactly for the weights it leaves between 0 and 1).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError("weights: expected finite values, one per training point")
    if not 0 <= size <= values.size:
        raise ValueError(f"size: {size} is outside 0..{values.size}")
    low, high = values.min() - 1.0, values.max()
    for _ in range(MAX_BISECTIONS):
        middle = 0.5 * (low + high)
        if not low < middle < high:
            break
        total = np.clip(values - middle, 0.0, 1.0).sum()
        if total > size:
            low = middle
        elif total < size:
            high = middle
        else:
            low = high = middle
    shift = 0.5 * (low + high)
    # The bracket fixes which weights sit at 0, at 1 and in between; the free ones
    # then give the shift in closed form, and the sum is `size` up to rounding.
    at_one = values - shift >= 1.0
    free = (values - shift > 0.0) & ~at_one
    if free.any():
        shift = (values[free].sum() + at_one.sum() - size) / free.sum()
    return np.clip(values - shift, 0.0, 1.0)


def _sign_descent(model, x, y, keep, epochs: int, lr: float, batch_size: int,
                  generator: torch.Generator, device) -> None:
    """`epochs` epochs of theta <- theta - lr sign(grad of sum_i keep_i CE_i) per batch."""
    model.train()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in batches(len(y), batch_size, generator, device):
                losses = F.cross_entropy(model(x[batch]), y[batch], reduction="none")
                loss = (keep[batch] * losses).sum()
                model.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    for parameter in parameters:
                        if parameter.grad is not None:
                            parameter.add_(parameter.grad.sign(), alpha=-lr)


@torch.no_grad()
def reinitialised_state(model, seed: int) -> dict:
    """`model`'s state with every nn.Linear and nn.Conv2d weight drawn Xavier-uniform
    and its bias zeroed (the reference's `weights_init`); other parameters and
    buffers as they are. Drawn on the CPU from a generator seeded with `seed`, so
    the same on every device."""
    fresh = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(seed)
    for module in fresh.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    return {name: value.detach().clone() for name, value in fresh.state_dict().items()}


@torch.no_grad()
def _per_point_losses(model, x, y) -> np.ndarray:
    """Cross-entropy of every point [n] in eval mode, float64."""
    model.eval()
    losses = [F.cross_entropy(model(x[start:start + EVAL_BATCH_SIZE]).float(),
                              y[start:start + EVAL_BATCH_SIZE], reduction="none")
              for start in range(0, len(y), EVAL_BATCH_SIZE)]
    return torch.cat(losses).double().cpu().numpy()


def _check_positive(key: str, value, integer: bool, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or (integer and not isinstance(value, (int, np.integer))):
        raise ValueError(f"{key}: expected {'an integer' if integer else 'a number'}, got "
                         f"{value!r}")
    if not (value >= 0 if allow_zero else value > 0) or not np.isfinite(value):
        raise ValueError(f"{key}: {value!r} must be {'>= 0' if allow_zero else '> 0'}")


def bilevel_worst_case(model, x, y, size: int, *, outer_steps: int = 10, inner_epochs: int = 2,
                       inner_lr: float = 0.01, w_lr: float = 0.01, gamma: float = 0.0,
                       lower_level: str = "fine_tune", batch_size: int = 256, seed: int = 0,
                       device=None, log=print):
    """Fan et al.'s worst-case forget set of `size` training points (module docstring).

    model: with `lower_level: fine_tune` the trained pilot, whose weights every
    outer step restarts from; with `retrain` any model of the architecture
    (only its BatchNorm parameters and buffers are kept, the rest is
    re-initialised from `seed` at every step). It is copied, never changed.
    x [n, ...], y [n]: the training points in training-index order. device:
    where to run (default x's device). Returns (sorted int64 indices, final
    weights float64 [n], warnings): a warning when the set is still the random
    initial subset, as at the default w_lr on digits, where a step moves a
    weight by w_lr times a loss, far less than the 1 between members and the
    rest (docs/forget_sets.md, section 6).
    """
    if lower_level not in LOWER_LEVELS:
        raise ValueError(f"lower_level: {lower_level!r} is not one of {list(LOWER_LEVELS)}")
    for key, value in (("outer_steps", outer_steps), ("inner_epochs", inner_epochs),
                       ("batch_size", batch_size)):
        _check_positive(key, value, integer=True)
    for key, value in (("inner_lr", inner_lr), ("w_lr", w_lr)):
        _check_positive(key, value, integer=False)
    _check_positive("gamma", gamma, integer=False, allow_zero=True)
    _check_positive("seed", seed, integer=True, allow_zero=True)
    x = torch.as_tensor(x)
    device = torch.device(device) if device is not None else x.device
    x = x.to(device)
    y = torch.as_tensor(y).to(device=device, dtype=torch.long)
    n = len(y)
    size = check_size(size, n)
    lower = copy.deepcopy(model).to(device)
    if lower_level == "retrain":
        start = reinitialised_state(model, seed)
    else:
        start = {name: value.detach().clone() for name, value in lower.state_dict().items()}
    weights = np.zeros(n)
    weights[np.random.default_rng(seed).choice(n, size, replace=False)] = 1.0
    generator = torch.Generator().manual_seed(seed)
    initial = chosen = np.flatnonzero(weights)
    for step in range(outer_steps):
        started = time.perf_counter()
        lower.load_state_dict(start)
        keep = torch.as_tensor(1.0 - weights, dtype=torch.float32, device=device)
        _sign_descent(lower, x, y, keep, inner_epochs, inner_lr, batch_size, generator, device)
        losses = _per_point_losses(lower, x, y)
        weights = project_capped_simplex(weights - w_lr * (losses + 2.0 * gamma * weights), size)
        previous, chosen = chosen, np.sort(rank_order(weights)[:size])
        log(f"bilevel step {step + 1}/{outer_steps}: weighted forget loss "
            f"{float(weights @ losses):.4f}, {size - np.intersect1d(previous, chosen).size} of "
            f"{size} points changed ({time.perf_counter() - started:.2f}s)")
        if (step + 1) % ROUNDING_INTERVAL == 0 and step + 1 < outer_steps:
            weights = np.zeros(n)
            weights[chosen] = 1.0
            log(f"bilevel step {step + 1}: weights rounded to the {size} chosen points")
    warnings = []
    if np.array_equal(chosen, initial):
        warnings.append(
            f"bilevel: after {outer_steps} outer steps the set is still its random initial "
            f"subset (seed {seed}): the weight steps (w_lr {w_lr} times per-point losses of at "
            f"most {float(losses.max()):.3g}) never lifted a point past a member; raise w_lr "
            f"or outer_steps"
        )
    return chosen.astype(np.int64), weights, warnings
