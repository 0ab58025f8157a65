"""KLOM: per-point binned KL divergence between unlearned and oracle margins.

Follows docs/klom.md (Georgiev et al. 2024, appendix E.1, and the
authors' evaluation code) so that numbers are comparable with published ones.
`klom_per_point` is the vectorised implementation used by the workflow;
`klom_one_point_reference` is a literal, one-point-at-a-time transcription kept
for the tests.
"""

from __future__ import annotations

import numpy as np

# The `klom` options and their choices live with the other config sections.
from klomflow.options import KlomOptions

# Bump when a change to this module can change KLOM values: it enters the KLOM
# rules' params, so Snakemake recomputes every KLOM file (docs/reruns.md, "Code versions").
# 2: per-point files also hold shift_over_std.
VERSION = "2"

SPLITS = ("forget", "retain", "val")
PERCENTILES = (50, 95, 99)
DEFAULT_OPTIONS = KlomOptions()


def _bin_counts(samples, edges, bins: int, binning: str):
    """Counts of `samples` [n_models, n_points] over per-point `edges` [n_points, bins+1].

    Returns int64 counts [n_points, bins]. Reference binning is
    numpy.digitize(value, edges) keeping indices 1..bins only, so a sample equal
    to the upper edge is dropped; inclusive binning closes the last bin.
    """
    # digitize(x, edges) with increasing edges = number of edges <= x.
    index = (samples[:, :, None] >= edges[None, :, :]).sum(axis=2)  # [n_models, n_points]
    if binning == "inclusive":
        index = np.minimum(index, bins)
    counts = np.zeros((samples.shape[1], bins + 2), dtype=np.int64)
    point = np.broadcast_to(np.arange(samples.shape[1]), samples.shape)
    np.add.at(counts, (point.ravel(), index.ravel()), 1)
    return counts[:, 1 : bins + 1]


def _bin_probabilities(samples, edges, bins: int, binning: str):
    """`_bin_counts` divided by the number of counted samples: [n_points, bins]."""
    counts = _bin_counts(samples, edges, bins, binning)
    total = counts.sum(axis=1, keepdims=True)
    # A side whose every sample sits on the upper edge has no counted sample;
    # the reference code then divides 0 by 0 and its `p > 0` mask skips the
    # point (KLOM 0). Only margins all clipped at +clip can do that.
    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = counts / total
    return np.nan_to_num(probabilities, nan=0.0)


def klom_per_point(unlearned, oracle, options: KlomOptions = DEFAULT_OPTIONS, chunk: int = 4096):
    """KLOM of every point.

    unlearned: [n_unlearned, n_points] margins; oracle: [n_oracle, n_points].
    Returns float64 [n_points].
    """
    unlearned = np.asarray(unlearned, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    if unlearned.ndim != 2 or oracle.ndim != 2 or unlearned.shape[1] != oracle.shape[1]:
        raise ValueError(
            f"margins must be [n_models, n_points] with equal n_points, got "
            f"{unlearned.shape} and {oracle.shape}"
        )
    if len(unlearned) == 0 or len(oracle) == 0:
        raise ValueError("KLOM needs at least one model on each side")
    result = np.empty(unlearned.shape[1])
    for start in range(0, unlearned.shape[1], chunk):
        window = slice(start, start + chunk)
        result[window] = _klom_chunk(unlearned[:, window], oracle[:, window], options)
    return result


def bin_edges(unlearned, oracle, options: KlomOptions | None = None):
    """The edges KLOM bins each point's margins on: [n_points, bins+1].

    Both samples clipped to [-clip, clip], then `bins` equal bins over their joint range
    (one unit wide when all samples are equal). Returns (edges, clipped unlearned, clipped
    oracle).
    """
    options = options or KlomOptions()
    u = np.clip(np.asarray(unlearned, dtype=np.float64), -options.clip, options.clip)
    o = np.clip(np.asarray(oracle, dtype=np.float64), -options.clip, options.clip)
    low = np.minimum(u.min(axis=0), o.min(axis=0))
    high = np.maximum(u.max(axis=0), o.max(axis=0))
    high = np.where(high <= low, low + 1.0, high)
    return np.linspace(low, high, options.bins + 1, axis=1), u, o


def binned_margins(unlearned, oracle, options: KlomOptions | None = None):
    """The two histograms KLOM compares at each point.

    unlearned: [n_unlearned, n_points], oracle: [n_oracle, n_points] finite margins.
    Returns (edges [n_points, bins+1], p_unlearned, p_oracle [n_points, bins]);
    the report's margin histograms plot exactly these.
    """
    options = options or KlomOptions()
    edges, u, o = bin_edges(unlearned, oracle, options)
    return (edges, _bin_probabilities(u, edges, options.bins, options.binning),
            _bin_probabilities(o, edges, options.bins, options.binning))


def binned_counts(samples, edges, options: KlomOptions | None = None):
    """Counts [n_points, bins] of `samples` [n_models, n_points] (clipped) on KLOM's `edges`.

    With the edges of `bin_edges`, the counts KLOM's probabilities are made of; any other
    sample (the originals' margins) is counted on the same bins, its values outside them
    left out as KLOM leaves out a sample outside its range.
    """
    options = options or KlomOptions()
    clipped = np.clip(np.asarray(samples, dtype=np.float64), -options.clip, options.clip)
    return _bin_counts(clipped, edges, options.bins, options.binning)


def _klom_chunk(unlearned, oracle, options: KlomOptions):
    _, p_u, p_o = binned_margins(unlearned, oracle, options)
    p, q = (p_u, p_o) if options.direction == "unlearned_to_oracle" else (p_o, p_u)
    q = np.maximum(q, options.eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=1)


def klom_one_point_reference(u, o, options: KlomOptions = DEFAULT_OPTIONS) -> float:
    """KLOM of one point, written as docs/klom.md states it, with numpy's own binning."""
    u = np.clip(np.asarray(u, dtype=np.float64), -options.clip, options.clip)
    o = np.clip(np.asarray(o, dtype=np.float64), -options.clip, options.clip)
    low = min(u.min(), o.min())
    high = max(u.max(), o.max())
    if high <= low:
        high = low + 1
    edges = np.linspace(low, high, options.bins + 1)

    def probabilities(sample):
        if options.binning == "inclusive":
            counts, _ = np.histogram(sample, bins=edges)
        else:
            index = np.digitize(sample, edges)
            counts = np.array([(index == i).sum() for i in range(1, options.bins + 1)])
        return counts / counts.sum() if counts.sum() else np.zeros(options.bins)

    p, q = probabilities(u), probabilities(o)
    if options.direction == "oracle_to_unlearned":
        p, q = q, p
    total = 0.0
    for p_bin, q_bin in zip(p, q):
        if p_bin > 0:
            total += p_bin * np.log(p_bin / max(q_bin, options.eps))
    return float(total)


def mean_shift_over_std(unlearned, oracle) -> np.ndarray:
    """Per point, |mean unlearned margin - mean oracle margin| / seed-to-seed std.

    The std pools both sides' seed-to-seed variances (ddof 1). It says why KLOM
    saturates: once the shift is a few stds, the two histograms fall into
    disjoint bins whatever the method did. 0 where both means and stds agree
    exactly (e.g. margins all clipped), inf for a shift with no spread.
    unlearned: [n_unlearned, n_points]; oracle: [n_oracle, n_points].
    """
    unlearned = np.asarray(unlearned, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    shift = np.abs(unlearned.mean(axis=0) - oracle.mean(axis=0))
    spread = np.sqrt((unlearned.var(axis=0, ddof=1) + oracle.var(axis=0, ddof=1)) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(shift == 0, 0.0, shift / spread)


def finite_models(margins) -> np.ndarray:
    """Boolean [n_models]: rows without NaN or infinity (diverged runs are excluded)."""
    return np.isfinite(np.asarray(margins)).all(axis=1)


def summarise(values) -> dict:
    """Mean, std and percentiles (numpy linear interpolation) of per-point KLOM values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"klom_mean": np.nan, "klom_std": np.nan} | {
            f"klom_p{q}": np.nan for q in PERCENTILES
        }
    summary = {"klom_mean": float(values.mean()), "klom_std": float(values.std())}
    for q in PERCENTILES:
        summary[f"klom_p{q}"] = float(np.percentile(values, q))
    return summary


def average_95(p95_by_split: dict) -> float:
    """The headline number: mean of the forget, retain and validation 95th percentiles."""
    return float(np.mean([p95_by_split[split] for split in SPLITS]))
