"""do_nothing: return the original model unchanged.

The baseline every KLOM table needs: it shows how far the original models are
from the oracles, so it scores high on the forget split.
"""

from klomflow.unlearning.methods.base import implement


def unlearn(model, data, params):
    return model


METHOD = implement("do_nothing", unlearn)
