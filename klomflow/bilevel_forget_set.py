"""The `worst_case` proxy `bilevel`: Fan et al.'s bilevel forget-set search.

Fan et al., "Challenging Forgets: Unveiling the Worst-Case Forget Sets in
Machine Unlearning" (ECCV 2024, arXiv 2403.07362), data-wise code
OPTML-Group/Unlearn-WorstCase @ fc727ce, folder data-wise/ (file:line below
refer to it). ../shared/FORGET-SETS.md section 6 summarises it.

Relaxed selection w in [0, 1]^n with sum w = size. Each outer step:
1. reload the pilot model (main_selmu.py:104-110);
2. lower level, "unlearn" by fine-tuning on the points' complement weights:
   `inner_epochs` epochs of signSGD, theta <- theta - lr sign(grad), on the
   batch loss sum_i (1 - w_i) CE_i over every training point, in train mode
   (unlearn/FT.py:164-182; utils.py:381-392: `sign_step` ignores the SGD
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
recorded w, the one after the last upper step).

Where this module differs from the reference, and why:
- The upper step's per-point losses are computed in eval mode, in order, on
  the tensors as given. The reference evaluates them in train mode on its
  shuffled, augmented (random crop, flip) training loader, so with batch
  normalisation a point's loss depends on the batch it lands in and on the
  augmentation draw; eval mode makes it a function of the point and the
  weights, as the margins that KLOM scores are.
- No augmentation in the lower level either: klomflow trains without it.
- The initial subset comes from numpy.random.default_rng(seed) (the reference:
  np.random.RandomState(seed - 1)), and the batch order from one CPU
  torch.Generator seeded once and drawn on through all outer steps (the
  reference's seeded DataLoader also reshuffles every epoch from one stream).
- w is float64 and the bisection runs to float64 resolution (the reference
  keeps w in float32 and stops when the bracket on mu is below 1e-5 or after
  100 halvings, so sum w misses `size` by up to n 1e-5).
- Ties in the final top-`size` go to the smaller index (torch.topk leaves
  them unspecified); many w sit exactly at 1 after the projection.
- The reference rounds w to its top-`size` indicator every `feq_to_bi` outer
  steps (default 20, capped at the number of steps, and then applied after
  the last w is recorded): with its defaults no rounding happens, so none here.
- float32 throughout, also on CUDA (klomflow trains in bfloat16 there):
  sign(grad) of near-zero gradients is what the lower level follows.
On a GPU, sign(grad) of near-zero gradients can still differ between runs;
compare runs by Jaccard overlap, not bytes (section 6, "Determinism").
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from klomflow.derived_forget_sets import _check_size, rank_order
from klomflow.training import batches

# Halvings of the bracket on mu; float64 resolution is reached in about 60.
MAX_BISECTIONS = 200
# Points per forward pass when scoring the upper level (no gradients).
EVAL_BATCH_SIZE = 1024


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
                       batch_size: int = 256, seed: int = 0, device=None, log=print):
    """Fan et al.'s worst-case forget set of `size` training points (module docstring).

    model: the trained pilot (nn.Module); it is copied, never changed, and the
    copy restarts from its weights at every outer step. x [n, ...], y [n]: the
    training points in training-index order. device: where to run (default
    x's device). Returns (sorted int64 indices, final weights float64 [n]).
    """
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
    size = _check_size(size, n)
    pilot = copy.deepcopy(model).to(device)
    original = {name: value.detach().clone() for name, value in pilot.state_dict().items()}
    weights = np.zeros(n)
    weights[np.random.default_rng(seed).choice(n, size, replace=False)] = 1.0
    generator = torch.Generator().manual_seed(seed)
    chosen = np.flatnonzero(weights)
    for step in range(outer_steps):
        started = time.perf_counter()
        pilot.load_state_dict(original)
        keep = torch.as_tensor(1.0 - weights, dtype=torch.float32, device=device)
        _sign_descent(pilot, x, y, keep, inner_epochs, inner_lr, batch_size, generator, device)
        losses = _per_point_losses(pilot, x, y)
        weights = project_capped_simplex(weights - w_lr * (losses + 2.0 * gamma * weights), size)
        previous, chosen = chosen, np.sort(rank_order(weights)[:size])
        log(f"bilevel step {step + 1}/{outer_steps}: weighted forget loss "
            f"{float(weights @ losses):.4f}, {size - np.intersect1d(previous, chosen).size} of "
            f"{size} points changed ({time.perf_counter() - started:.2f}s)")
    return chosen.astype(np.int64), weights
