"""Image model families by name (``(B, C, H, W)`` floats in [0, 1] → class logits, or a reconstruction
for the autoencoder). Each is a config dataclass stored with the weights, as the text families."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from dl.models.alexnet import AlexNetConfig, AlexNetSmall
from dl.models.autoencoder import AutoencoderConfig, ConvAutoencoder
from dl.models.lenet import LeNet5, LeNetConfig
from dl.models.resnet import ResNetConfig, ResNetSmall

IMAGE_MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "lenet5": (LeNetConfig, LeNet5),
    "alexnet_small": (AlexNetConfig, AlexNetSmall),
    "resnet_small": (ResNetConfig, ResNetSmall),
    "autoencoder": (AutoencoderConfig, ConvAutoencoder),
}


def build_image_model(name: str, options: dict[str, Any] | None = None) -> nn.Module:
    """Model ``name`` with ``options`` (fields of its config); an unknown name or option is refused by name."""
    if name not in IMAGE_MODELS:
        raise ValueError(f"image model {name!r}: one of {', '.join(IMAGE_MODELS)}")
    cls, model = IMAGE_MODELS[name]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options or {}) - allowed)
    if unknown:
        raise ValueError(f"image model {name!r} has no option(s) {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(allowed))}")
    return model(cls(**(options or {})))


def rebuild_image_model(config: dict[str, Any]) -> nn.Module:
    """The model a stored ``{"model": name, **config}`` describes (weights not loaded)."""
    return build_image_model(config["model"], {k: v for k, v in config.items() if k != "model"})
