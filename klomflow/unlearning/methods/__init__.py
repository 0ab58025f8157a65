"""Unlearning methods: the registry (plain data) and the lookup table of implementations.

`METHODS[name]` imports that method's implementation on first use, so importing this
package (and `klomflow.unlearning.methods.registry`) does not import torch. What the workflow
plans with (defaults, versions, flags) is in `REGISTRY`; adding a method is described
in klomflow/unlearning/methods/registry.py.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from klomflow.unlearning.methods.registry import REGISTRY, MethodSpec


class LazyMethods(MutableMapping):
    """name -> Method, importing each implementation when it is first looked up.

    Its keys are the registry's; assigning a name (a test's stand-in) overrides it.
    """

    def __init__(self, specs: dict):
        self._specs = specs
        self._loaded = {}

    def __getitem__(self, name):
        if name not in self._loaded:
            self._loaded[name] = self._specs[name].load()
        return self._loaded[name]

    def __setitem__(self, name, method):
        self._loaded[name] = method

    def __delitem__(self, name):
        del self._loaded[name]

    def __iter__(self):
        yield from self._specs
        yield from (name for name in self._loaded if name not in self._specs)

    def __len__(self):
        return len(set(self._specs) | set(self._loaded))


METHODS = LazyMethods(REGISTRY)


def __getattr__(name):
    # Method and UnlearningData live beside torch; import them only when asked for.
    if name in ("Method", "UnlearningData"):
        from klomflow.unlearning.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "REGISTRY", "Method", "MethodSpec", "UnlearningData"]
