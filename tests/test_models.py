"""The ResNet-9 architecture pinned to the published one (../shared/PUBLISHED.md, section 0)."""

import torch
from torch import nn

from klomflow.training.models import build_model

# PUBLISHED.md's ResNet-9 table: state-dict keys (their residual child is named
# `module`, ours `block`) and shapes, for 10 classes. 49 keys.
CONV_BN = [(0, 3, 64, 3), (1, 64, 128, 5), ("2.module.0", 128, 128, 3),
           ("2.module.1", 128, 128, 3), (3, 128, 256, 3), ("5.module.0", 256, 256, 3),
           ("5.module.1", 256, 256, 3), (6, 256, 128, 3)]
PUBLISHED_SHAPES = {}
for prefix, channels_in, channels_out, kernel in CONV_BN:
    PUBLISHED_SHAPES[f"{prefix}.0.weight"] = (channels_out, channels_in, kernel, kernel)
    for buffer in ("weight", "bias", "running_mean", "running_var"):
        PUBLISHED_SHAPES[f"{prefix}.1.{buffer}"] = (channels_out,)
    PUBLISHED_SHAPES[f"{prefix}.1.num_batches_tracked"] = ()
PUBLISHED_SHAPES["9.weight"] = (10, 128)


def test_resnet9_has_the_published_parameters_and_layer_shapes():
    model = build_model({"name": "resnet9"}, (3, 32, 32), 10, init_seed=0)
    # "2,274,880 parameters excluding BN buffers (counted by instantiating the model)".
    assert sum(parameter.numel() for parameter in model.parameters()) == 2_274_880
    shapes = {name.replace(".block.", ".module."): tuple(value.shape)
              for name, value in model.state_dict().items()}
    assert len(PUBLISHED_SHAPES) == 49
    assert list(shapes.items()) == list(PUBLISHED_SHAPES.items())


def test_resnet9_layers_that_shapes_do_not_show():
    """Strides and paddings, the bias-free convolutions and head, BN defaults, the 0.2 scale."""
    model = build_model({"name": "resnet9"}, (3, 32, 32), 10, init_seed=0)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.stride, c.padding) for c in convolutions] == [
        ((1, 1), (1, 1)), ((2, 2), (2, 2)), *[((1, 1), (1, 1))] * 5, ((1, 1), (0, 0))]
    assert all(c.bias is None for c in convolutions)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 8 and all((n.eps, n.momentum) == (1e-5, 0.1) for n in norms)
    assert isinstance(model[4], nn.MaxPool2d) and model[4].kernel_size == 2
    assert isinstance(model[7], nn.AdaptiveMaxPool2d)
    assert model[9].bias is None
    # Forward: 32x32 in, 10 logits out, 0.2 x the head's output; residuals add.
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 10)
        torch.testing.assert_close(logits, 0.2 * model[:10](x), rtol=0, atol=0)
        inner = model[:2](x)
        torch.testing.assert_close(model[2](inner), inner + model[2].block(inner), rtol=0, atol=0)
