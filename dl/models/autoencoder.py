"""A convolutional autoencoder for small images: two strided convolutions down to a ``code``-dimensional
vector, two transposed convolutions back, sigmoid output in [0, 1]. With ``noise_std`` > 0 it is a
denoising autoencoder: training inputs get Gaussian noise, the target stays the clean image. The
encoder's code is a feature vector for a linear probe."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from dl.models.base import ModelConfig


class AutoencoderConfig(ModelConfig):
    """A convolutional autoencoder (denoising when ``noise_std`` > 0)."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("channels", "size")
    channels: int = 1
    size: int = 28  # divisible by 4
    width: int = Field(32, ge=1)
    code: int = Field(64, ge=1, description="the code (feature) vector's size")
    noise_std: float = Field(0.0, ge=0, description="> 0: denoising (Gaussian noise on training inputs)")


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        if cfg.size % 4:
            raise ValueError(f"autoencoder size {cfg.size} is not divisible by 4")
        self.cfg = cfg
        w, side = cfg.width, cfg.size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(2 * w * side * side, cfg.code))
        self.decoder = nn.Sequential(
            nn.Linear(cfg.code, 2 * w * side * side), nn.ReLU(inplace=True), nn.Unflatten(1, (2 * w, side, side)),
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, cfg.channels, 3, 2, 1, output_padding=1), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x`` (B, C, H, W) in [0, 1]; noisy input in training when denoising."""
        if self.training and self.cfg.noise_std > 0:
            x = (x + self.cfg.noise_std * torch.randn_like(x)).clamp(0, 1)
        return self.decoder(self.encoder(x))
