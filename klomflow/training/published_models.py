"""Published ResNet-9 checkpoints as klomflow models: the key mapping and a strict load.
"""

from __future__ import annotations

import re
from pathlib import Path

from klomflow.data.published.layout import PublishedError

# --- checkpoints ---------------------------------------------------------------------------------

# The published Residual names its child `module`; klomflow's names it `block`.
_RESIDUAL_CHILD = re.compile(r"^(\d+)\.module\.")


def published_to_klomflow_keys(state_dict: dict, path="") -> dict:
    """A published ResNet-9 state dict with klomflow's key names.

    Strips a leading `model.` (the WrappedModel prefix), then a leading
    `module.` (DataParallel, never produced but harmless), with removeprefix,
    never a global replace (that would corrupt the residual blocks' keys), and
    renames the residual child `{2,5}.module.` to `block.`.
    """
    import torch

    renamed = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise PublishedError(f"{path}: entry {key!r} is not a tensor; expected a state dict")
        stripped = key.removeprefix("model.").removeprefix("module.")
        stripped = _RESIDUAL_CHILD.sub(r"\1.block.", stripped)
        # channels_last strides are kept by torch.load; load_state_dict copies values.
        renamed[stripped] = value.contiguous()
    return renamed


def load_published_model(path, n_classes: int = 10, input_shape=(3, 32, 32)):
    """A klomflow ResNet-9 with a published checkpoint's weights, loaded strictly."""
    import torch

    from klomflow.training.models import build_model

    path = Path(path)
    if not path.exists():
        raise PublishedError(f"missing file {path}")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise PublishedError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    model = build_model({"name": "resnet9"}, input_shape, n_classes, init_seed=0)
    try:
        model.load_state_dict(published_to_klomflow_keys(state_dict, path), strict=True)
    except RuntimeError as error:
        raise PublishedError(f"{path}: not a ResNet-9 state dict of the published layout "
                             f"({error})") from None
    return model


