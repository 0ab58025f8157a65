"""Model architectures: a small MLP for CPUs and the KLOM paper's ResNet-9."""

from __future__ import annotations

import math

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, input_shape, hidden, n_classes):
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        layers = [nn.Flatten()]
        for width_in, width_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def conv_bn(channels_in, channels_out, kernel_size=3, stride=1, padding=1):
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def resnet9(input_shape, n_classes):
    """ResNet-9 of the KLOM paper (the ffcv CIFAR-10 network).

    conv-bn widths 64-128-256-128 with two residual blocks, a global max pool,
    a bias-free linear head, and the output scaled by 0.2 (it keeps the initial
    logits small, which the paper's high peak learning rate relies on).
    """
    channels = input_shape[0]
    return nn.Sequential(
        conv_bn(channels, 64, kernel_size=3),
        conv_bn(64, 128, kernel_size=5, stride=2, padding=2),
        Residual(nn.Sequential(conv_bn(128, 128), conv_bn(128, 128))),
        conv_bn(128, 256, kernel_size=3),
        nn.MaxPool2d(2),
        Residual(nn.Sequential(conv_bn(256, 256), conv_bn(256, 256))),
        conv_bn(256, 128, kernel_size=3, padding=0),
        nn.AdaptiveMaxPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(128, n_classes, bias=False),
        Scale(0.2),
    )


def build_model(model_config: dict, input_shape, n_classes, init_seed: int) -> nn.Module:
    """A freshly initialised model; `init_seed` fixes its initial weights."""
    name = model_config["name"]
    # nn.Module initialisers draw from the global generator; fork it so that
    # the seed is explicit and nothing outside this call is disturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if name == "mlp":
            return Mlp(input_shape, model_config.get("hidden", [256]), n_classes)
        if name == "resnet9":
            return resnet9(input_shape, n_classes)
    raise ValueError(f"model.name: unknown model {name!r}; choose 'mlp' or 'resnet9'")
