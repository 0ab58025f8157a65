"""Stable hashes and the seeds derived from them: every model's seed is a hash of the base
seed and a description of the model, so it is the same on every machine and run."""

from __future__ import annotations

import hashlib
import json


def stable_hash(payload, length: int = 10) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_seed(base_seed: int, *parts) -> int:
    """A 31-bit seed derived from the base seed and a description of the model."""
    return int(stable_hash([base_seed, *parts], length=8), 16) & 0x7FFFFFFF
