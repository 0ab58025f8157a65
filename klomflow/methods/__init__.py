"""The lookup table from method names to implementations.

Adding a method: write one module with a `METHOD = Method(...)` and add it
to the tuple below.
"""

from klomflow.methods import (
    bad_teaching,
    do_nothing,
    gradient_ascent,
    gradient_descent,
    l1_sparse,
    neggrad_plus,
    random_label,
    salun,
    scrub,
)
from klomflow.methods.base import Method, UnlearningData

METHODS: dict[str, Method] = {
    module.METHOD.name: module.METHOD
    for module in (
        do_nothing,
        gradient_ascent,
        gradient_descent,
        neggrad_plus,
        random_label,
        salun,
        scrub,
        bad_teaching,
        l1_sparse,
    )
}

__all__ = ["METHODS", "Method", "UnlearningData"]
