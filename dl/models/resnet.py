"""A small ResNet (He et al. 2016) for 28-64 px images: a 3x3 stem, three stages of basic residual blocks
(two 3x3 convolutions with batch norm; a strided 1x1 projection when the shape changes), global average
pooling and a linear classifier."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dl.models.base import ModelConfig


class ResNetConfig(ModelConfig):
    """A small ResNet: stages of residual blocks with batch norm."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("num_classes", "channels", "size")
    num_classes: int = 10
    channels: int = 1
    size: int = 28
    widths: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                              description="channels per stage; stride 2 after the first")
    blocks: int = Field(2, ge=1, description="residual blocks per stage")
    dropout: float = Field(0.0, ge=0, lt=1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNetSmall(nn.Module):
    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(cfg.channels, cfg.widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cfg.widths[0])
        layers, cin = [], cfg.widths[0]
        for s, width in enumerate(cfg.widths):
            for b in range(cfg.blocks):
                layers.append(BasicBlock(cin, width, 2 if s > 0 and b == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cin, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.features(x))
        return self.fc(self.drop(F.adaptive_avg_pool2d(h, 1).flatten(1)))
