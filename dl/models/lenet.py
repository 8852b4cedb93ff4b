"""LeNet-5 (LeCun et al. 1998) for small grey or colour images: two 5x5 convolutions with pooling, then
three fully connected layers. The input is padded to 32x32 as in the paper when it is smaller (28x28)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dl.models.base import ModelConfig


class LeNetConfig(ModelConfig):
    """LeNet-5 (two convolutions, three fully connected layers)."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("num_classes", "channels", "size")
    num_classes: int = 10
    channels: int = 1
    size: int = 28  # input height = width
    activation: Literal["relu", "tanh"] = Field("relu", description="tanh: the paper's")
    dropout: float = Field(0.0, ge=0, lt=1)


class LeNet5(nn.Module):
    def __init__(self, cfg: LeNetConfig) -> None:
        super().__init__()
        if cfg.activation not in ("relu", "tanh"):
            raise ValueError("lenet activation: relu | tanh")
        self.cfg = cfg
        self.pad = max(0, (32 - cfg.size) // 2)
        side = cfg.size + 2 * self.pad
        self.conv1 = nn.Conv2d(cfg.channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        flat = 16 * (((side - 4) // 2 - 4) // 2) ** 2
        self.fc1, self.fc2, self.fc3 = nn.Linear(flat, 120), nn.Linear(120, 84), nn.Linear(84, cfg.num_classes)
        self.act = torch.relu if cfg.activation == "relu" else torch.tanh
        self.drop = nn.Dropout(cfg.dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The first convolution's feature maps (B, 6, H', W'), for pictures."""
        return self.act(self.conv1(F.pad(x, [self.pad] * 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.features(x), 2)
        x = F.max_pool2d(self.act(self.conv2(x)), 2).flatten(1)
        return self.fc3(self.drop(self.act(self.fc2(self.drop(self.act(self.fc1(x)))))))
