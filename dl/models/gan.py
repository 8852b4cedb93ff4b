"""DCGAN (Radford et al. 2016) for small images, and its class-conditional form: a generator from noise (and a
class) to an image, a discriminator from an image (and its class) to a real/fake logit. The two are separate
submodules stepped in turn by two optimizers (the engine's ``phases``: dl/engine/loop.py); the data adapter
(dl/data/images.py ``GanData``) holds the losses.

Generator: ``z`` (plus the class as a one-hot, when conditional) → a linear layer to ``2w × s/4 × s/4`` → two
transposed convolutions (stride 2, batch norm and ReLU between) → ``tanh``: pixels in [-1, 1].
Discriminator: two strided convolutions (leaky ReLU, batch norm on the second) → a linear real/fake logit; when
conditional, plus the inner product of the features with a learned vector per class (the projection
discriminator, Miyato & Koyama 2018), which ties the judgement to the class the image claims to be.
Weights start as DCGAN's paper says: N(0, 0.02) for convolutions (and the class vectors), N(1, 0.02) for batch
norm scales."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from dl.models.base import ModelConfig


class GanConfig(ModelConfig):
    """A DCGAN (class-conditional when ``conditional``) for square images whose side is divisible by 4."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("channels", "size", "num_classes")
    channels: int = 1
    size: int = 28
    num_classes: int = 10
    z_dim: int = Field(64, ge=1, description="the noise vector's size")
    width: int = Field(64, ge=1, description="channels of the first convolution (the second has twice as many)")
    conditional: bool = Field(False, description="class-conditional: the generator takes a class, the "
                              "discriminator judges an image as that class (projection)")


def _dcgan_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)  # the class vectors too: N(0, 1) over ~6k features is huge
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, side = cfg.width, cfg.size // 4
        extra = cfg.num_classes if cfg.conditional else 0
        self.project = nn.Sequential(nn.Linear(cfg.z_dim + extra, 2 * w * side * side, bias=False),
                                     nn.Unflatten(1, (2 * w, side, side)), nn.BatchNorm2d(2 * w), nn.ReLU(True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [-1, 1] from noise ``z (B, z_dim)`` (and ``labels (B,)``, conditional)."""
        if self.cfg.conditional:
            z = torch.cat([z, nn.functional.one_hot(labels, self.cfg.num_classes).to(z.dtype)], 1)
        return self.up(self.project(z))


class Discriminator(nn.Module):
    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, side = cfg.width, cfg.size // 4
        self.features = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
            nn.Flatten())
        self.logit = nn.Linear(2 * w * side * side, 1)
        self.classes = nn.Embedding(cfg.num_classes, 2 * w * side * side) if cfg.conditional else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One real/fake logit per image ``(B,)``; conditional: for ``images`` claimed to be ``labels``."""
        h = self.features(images)
        out = self.logit(h).squeeze(1)
        if self.classes is not None:
            out = out + (self.classes(labels) * h).sum(1)
        return out


class DCGAN(nn.Module):
    """The pair, saved and restored as one model; ``draws`` counts the noise batches training drew (with the
    rank it seeds the next one, so ranks draw different noise and a resumed run draws what it would have)."""

    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        if cfg.size % 4:
            raise ValueError(f"dcgan size {cfg.size} is not divisible by 4")
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)
        self.apply(_dcgan_init)
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def noise(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None):
        """``(z, labels)`` for ``n`` samples: standard normal noise, and (conditional) uniformly drawn classes
        unless ``labels`` are given; None for an unconditional model."""
        z = torch.randn(n, self.cfg.z_dim, generator=generator)
        if not self.cfg.conditional:
            return z, None
        if labels is None:
            labels = torch.randint(0, self.cfg.num_classes, (n,), generator=generator)
        return z, labels

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1], reproducible with ``seed`` (class ``labels`` when conditional)."""
        z, labels = self.noise(n, torch.Generator().manual_seed(seed), labels)
        device = next(self.parameters()).device
        was = self.generator.training
        self.generator.eval()
        try:
            out = self.generator(z.to(device), None if labels is None else labels.to(device))
        finally:
            self.generator.train(was)
        return (out + 1) / 2

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's images in [-1, 1]."""
        return self.generator(z, labels)
