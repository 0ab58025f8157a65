"""oracle_matching (OM; Georgiev et al. 2024, "Attribute-to-Delete: Machine
Unlearning via Datamodel Matching", arXiv 2410.23232).

Fine-tune the original model so that its logits match the mean logits of k
oracles (models retrained without F) by mean squared error:
    loss = mean over batch and classes of (f(x) - mean_k oracle_k(x))^2
on F (repeated `forget_mult` times) plus a random retain subset of
retain_mult * |F| points; Adam, learning rate times `lr_decay` after every
epoch. Data: forget set, a sample of the retain set, oracles' logits.

OM uses oracles, so it is an upper-bound diagnostic, not a competitor
(`diagnostic=True`). The workflow passes only the held-out oracles'
logits (`holdout_oracle_logits`: oracles of other seeds than the ones KLOM
scores against, [n_holdout_oracles, n_points, n_classes], training points
first); it must never be given the scored oracles, or it would be matched
to its own reference. Each unlearned model matches its own random subset
of `n_oracles` of them, drawn without replacement from its generator
(`oracle_subset`), as the authors draw a fresh subset of oracles on every
run. Version 1 used the first `n_oracles` for every model, so all models
chased one target and their spread understated an unlearning run's.

Differences from the authors' code, and why:
- Targets are the oracles' logits precomputed in evaluation mode, not the
  oracle networks run on each batch; for networks without batch statistics
  (or oracles in eval mode, as the authors set them) they are the same.
- The oracle subset and the retain subset are drawn from `data.generator`
  (in that order), so each original model gets its own of each, and the
  fine-tuning set is reshuffled every epoch; the authors draw the oracles
  from their run's seed but use one fixed-seed retain subset and an
  unshuffled loader.
- A fractional `forget_mult` repeats F int(forget_mult) times plus its first
  fraction of points, as the authors do.
"""

from __future__ import annotations

import numpy as np
import torch

from klomflow.unlearning.methods.base import implement
from klomflow.unlearning.methods.matching import finetuning_indices, match_logits


def oracle_subset(n_available: int, k: int, generator: torch.Generator) -> np.ndarray:
    """k distinct indices into the held-out oracles, in the order drawn from `generator`."""
    return torch.randperm(n_available, generator=generator)[:k].numpy()


def matching_targets(data, params):
    """(fine-tuning indices [n], the mean of this model's drawn oracles' logits there [n, C]).

    Draws the oracle subset, then the retain sample, from `data.generator`.
    """
    oracle_logits = data.extras["holdout_oracle_logits"]  # [n_holdout, n_points, n_classes]
    k = params["n_oracles"]
    if len(oracle_logits) < k:
        raise ValueError(
            f"oracle_matching: n_oracles={k} but only {len(oracle_logits)} held-out oracles; "
            f"raise models.n_holdout_oracles or lower n_oracles"
        )
    if oracle_logits.shape[1] < len(data.train_y):
        raise ValueError("oracle_matching: oracle logits cover fewer points than the training set")
    # Sorted rows read a memory map in order; the mean does not depend on the order.
    oracles = np.sort(oracle_subset(len(oracle_logits), k, data.generator))
    indices = finetuning_indices(data, params)
    # Training index i is evaluation point i (training points come first).
    targets = np.asarray(oracle_logits[oracles][:, indices.numpy()], dtype=np.float32).mean(axis=0)
    data.log(f"oracle_matching: matching held-out oracles {oracles.tolist()}")
    return indices, targets


def unlearn(model, data, params):
    indices, targets = matching_targets(data, params)
    return match_logits(model, data, indices, targets, params)


METHOD = implement("oracle_matching", unlearn)
