"""A small AlexNet-style network (Krizhevsky et al. 2012, scaled to 28-64 px images): five 3x3
convolutions with ReLU, max pooling after the 1st, 2nd and 5th, then dropout and two wide fully
connected layers."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from dl.models.base import ModelConfig


class AlexNetConfig(ModelConfig):
    """A small AlexNet: five convolutions, three fully connected layers, dropout."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("num_classes", "channels", "size")
    num_classes: int = 10
    channels: int = 1
    size: int = 28
    width: int = Field(32, ge=1, description="channels of the first convolution (then 2x, 4x, 4x, 2x)")
    hidden: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)


class AlexNetSmall(nn.Module):
    def __init__(self, cfg: AlexNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.conv1 = nn.Conv2d(cfg.channels, w, 3, padding=1)
        self.body = nn.Sequential(
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        side = cfg.size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(2 * w * side * side, cfg.hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden),
                                  nn.ReLU(inplace=True), nn.Linear(cfg.hidden, cfg.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.conv1(x)))
