"""The lookup table from method names to implementations.

Adding a method: write one module with a `METHOD = Method(...)` and add it
to the tuple below.
"""

from klomflow.methods import do_nothing, gradient_ascent, gradient_descent, neggrad_plus
from klomflow.methods.base import Method, UnlearningData

METHODS: dict[str, Method] = {
    module.METHOD.name: module.METHOD
    for module in (do_nothing, gradient_ascent, gradient_descent, neggrad_plus)
}

__all__ = ["METHODS", "Method", "UnlearningData"]
