"""CIFAR VGG-16 (the thesis' evaluation model) with a width multiplier.

Thirteen 3x3 convolutions, each followed by BatchNorm and ReLU, five 2x2 max-pools, and one
linear classifier on the 1x1 feature map left after the fifth pool (the usual CIFAR variant
of Simonyan & Zisserman's configuration "D").

Example
-------
>>> import torch
>>> model = build_vgg16(width=0.25)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
13
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import nn

# Configuration "D": output channels of each 3x3 conv, "M" for a 2x2 max-pool.
VGG16_LAYOUT: Sequence[Union[int, str]] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a layer at width multiplier ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))


class CifarVGG(nn.Module):
    """VGG for 32x32 inputs: ``features`` (conv-BN-ReLU blocks and pools) then ``classifier``."""

    def __init__(self, layout: Sequence[Union[int, str]] = VGG16_LAYOUT, width: float = 1.0,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"width must be a positive number (1.0 = the standard VGG-16), got {width!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        layers: List[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = scaled_channels(int(item), width)
                layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def build_vgg16(width: float = 1.0, num_classes: int = 10) -> CifarVGG:
    """The CIFAR VGG-16 at width multiplier ``width`` (1.0: 64 ... 512 channels, 14.7 M parameters)."""
    return CifarVGG(VGG16_LAYOUT, width=width, num_classes=num_classes)
