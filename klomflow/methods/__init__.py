"""The lookup table from method names to implementations.

Adding a method: write one module with a `METHOD = Method(...)` and add it
to the tuple below.
"""

from klomflow.methods import (
    bad_teaching,
    dm_direct,
    dmm,
    do_nothing,
    fisher_forgetting,
    gradient_ascent,
    gradient_descent,
    l1_sparse,
    neggrad_plus,
    oracle_matching,
    pbu,
    random_label,
    salun,
    scrub,
    ssd,
    unsir,
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
        ssd,
        fisher_forgetting,
        pbu,
        unsir,
        oracle_matching,
        dmm,
        dm_direct,
    )
}

__all__ = ["METHODS", "Method", "UnlearningData"]
