"""The privacy metrics' names, constants and options, and the logit-scaled confidence the
attacks score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit

from klomflow.versions import PRIVACY as PRIVACY_VERSION

# Bump klomflow/versions.py's PRIVACY when a change here can change a privacy file.
VERSION = PRIVACY_VERSION

METRICS = ("competition", "ulira", "lira")
SPLITS = ("forget", "retain", "val")
# LiRA's Gaussians: per_example (a sigma per point and side, plot.py's default); fixed (plot.py's
# fix_variance: one sigma, np.std over every IN-shadow entry of the split, for both sides);
# pooled (one sigma per side, the root mean square of its per-point sigmas).
VARIANCES = ("per_example", "fixed", "pooled")
# Former names, still read: `global` was the pooled variance.
FORMER_VARIANCES = {"global": "pooled"}
# metric.py: DELTA, EPSILON_CAP, NUM_THRESHOLDS_PER_UNIT; the double-threshold buffer.
DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0
# A sample whose range is below 1% of the other's gets the capped epsilon.
RANGE_RATIO = 0.01
BUCKET_WIDTH = 0.5
# Added to sigma before the Gaussian log-density (plot.py).
SIGMA_FLOOR = 1e-30
TPR_FPR_LEVELS = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_0p1pct": 0.001}
# Fewer models than this leaves no buckets (competition) or too few shadows (LiRA).
MIN_MODELS = 3
# Below this many models per side the estimates are rough (a warning, not an error).
FEW_MODELS = 10


@dataclass(frozen=True)
class PrivacyOptions:
    metrics: tuple = METRICS
    delta: float = DELTA
    epsilon_cap: float = EPSILON_CAP
    thresholds_per_unit: int = THRESHOLDS_PER_UNIT
    buffer: float = BUFFER
    folds: int = 5
    variance: str = "per_example"
    max_points: int = 1000
    subset_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"privacy.metrics: unknown {unknown}; choose from {METRICS}")
        variance = FORMER_VARIANCES.get(self.variance, self.variance)
        if variance not in VARIANCES:
            raise ValueError(f"privacy.variance must be one of {VARIANCES}, got {self.variance!r}")
        object.__setattr__(self, "variance", variance)
        if self.folds < 2:
            raise ValueError("privacy.folds must be at least 2")

    def as_dict(self) -> dict:
        return asdict(self) | {"metrics": list(self.metrics)}


def logit_scaled_confidence(margins) -> np.ndarray:
    """phi = log(p_y + 1e-45) - log(1 - p_y + 1e-45) from margins, in float64.

    p_y / (1 - p_y) = exp(margin), so phi equals the margin up to the floor:
    within 2e-6 for |margin| <= 90, saturating at +-103.616.
    """
    margins = np.asarray(margins, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(expit(margins) + 1e-45) - np.log(expit(-margins) + 1e-45)


# The defaults, as one frozen value (a default argument evaluated once).
DEFAULT_OPTIONS = PrivacyOptions()
