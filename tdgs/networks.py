"""The networks tdgs-train trains (``model=``): the deck's CNN and torchvision's ResNet-18 and
VGG-11 (batch norm) fitted to 28-32 pixel images, each with the chosen pooler in place of every
max pool (:func:`~tdgs.pooling.replace_pooling`, so the pools keep their windows)."""

from __future__ import annotations

import torch
from torch import nn

from .model import PoolingCNN
from .pooling import replace_pooling
from .pooling.base import WINDOW


def resnet18(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-18 (He et al. 2016) for small images: a 3x3, stride-1 stem convolution taking the
    image's channels instead of the 7x7, stride-2 one; the stem's MaxPool2d(3, 2, padding=1) stays,
    so 32 (28) pixels reach the last stage at 2x2: (B, C, H, W) -> (B, classes)."""
    from torchvision import models  # here: importing torchvision takes about 2 s (torch._dynamo)

    model = models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(image_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    return model


def vgg11_bn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-11 with batch norm (Simonyan & Zisserman 2015) for small images: the first convolution
    takes the image's channels and pads images under 32 pixels up to 32 (28 -> padding 3), so that
    the five 2x2 max pools end at 1x1; global average pooling and one linear layer (512 -> classes)
    replace the 7x7 pooling and the 100M-parameter head: (B, C, H, W) -> (B, classes)."""
    from torchvision import models

    model = models.vgg11_bn(num_classes=num_classes)
    padding = 1 + max(0, 32 - min(image_shape[1:]) + 1) // 2
    model.features[0] = nn.Conv2d(image_shape[0], 64, kernel_size=3, padding=padding)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(512, num_classes)
    return model


TORCHVISION = {"resnet18": resnet18, "vgg11_bn": vgg11_bn}
MODELS = ("deck_cnn", *TORCHVISION)


def pooler_options_for(name: str, options: dict) -> dict:
    """The pooler options the network ``name`` takes: all for the deck's CNN; for a torchvision
    network those other than the window's, which must be at their defaults (its pools keep their
    windows). A ValueError in one line for a window option it cannot take."""
    if name == "deck_cnn":
        return options
    if name not in TORCHVISION:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, but got {name!r}")
    options = dict(options)
    for key, default in WINDOW.items():
        value = options.pop(key, default)
        if value != default:
            raise ValueError(
                f"pooler.{key}={value} sets the deck CNN's pools only; model={name} keeps the windows of its own pools"
            )
    return options


def build_model(
    name: str, pooler: str, image_shape: tuple[int, int, int], num_classes: int, **pooler_options
) -> nn.Module:
    """The network ``name`` (one of :data:`MODELS`) with the pooler ``pooler`` in every pool, its
    parameters sized for ``image_shape`` (C, H, W); ``pooler_options``: see :func:`pooler_options_for`."""
    options = pooler_options_for(name, pooler_options)
    if name == "deck_cnn":
        return PoolingCNN(pooler, image_shape, num_classes, **options)
    model = replace_pooling(TORCHVISION[name](image_shape, num_classes), pooler, **options)
    with torch.no_grad():  # sizes the lazy pooler parameters (channels, TDGS position temperatures)
        model.eval()(torch.zeros(1, *image_shape))
    return model.train()
