"""One colour and one marker per method, the same in every figure and on every forget set.

Built-in methods take their place in the method registry's order; any other entry name (a
grid entry under its own name, a user method) takes a place fixed by a hash of its name, so
a method looks the same whichever methods run beside it.
"""

from __future__ import annotations

import hashlib

from klomflow.reporting.names import NOISE_FLOOR
from klomflow.unlearning.methods.registry import REGISTRY

# matplotlib's tab10 colours, then the same hues lighter (tab20's odd entries).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
NOISE_FLOOR_STYLE = ("#404040", "*")
CEILING_COLOUR = "#b22222"
BUILT_IN = tuple(REGISTRY)


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of a method entry's name. Built-ins never share a pair (each takes
    a colour and a marker of its own); other names may share one with a built-in only by
    hash collision, which the legend's label then tells apart."""
    if method == NOISE_FLOOR:
        return NOISE_FLOOR_STYLE
    if method in BUILT_IN:
        place = BUILT_IN.index(method)
    else:
        digest = hashlib.sha256(method.encode()).digest()
        place = len(BUILT_IN) + int.from_bytes(digest[:4], "big") % 1000
    return COLOURS[place % len(COLOURS)], MARKERS[place % len(MARKERS)]


def _filled(colour: str) -> dict:
    return {"color": colour}


def _hollow(colour: str) -> dict:
    return {"facecolors": "none", "edgecolors": colour, "linewidths": 1.5}


def _half(colour: str) -> dict:
    return {"color": colour, "hatch": "////", "edgecolors": "k"}


def _faded(colour: str) -> dict:
    return {"color": colour, "alpha": 0.3, "edgecolors": "0.5"}


# How a marker's fill tells how its unlearning time was measured (figures.TIMING_WORDS).
TIMING_FILLS = {"alone": _filled, "amortised": _hollow, "mixed": _half, "unrecorded": _faded}
