"""Image families (``(B, C, H, W)`` floats in [0, 1] → class logits, or a reconstruction for the
autoencoder): building one for a dataset's shape and classes. The families are registered with the text
ones in dl/models/__init__.py."""

from __future__ import annotations

from typing import Any

from torch import nn

from dl.models import FAMILIES, IMAGE_MODELS, model_config, rebuild

__all__ = ["IMAGE_MODELS", "build_image_model", "rebuild_image_model"]


def build_image_model(name: str, options: dict[str, Any] | None = None) -> nn.Module:
    """Image family ``name`` from ``options``: its hyper-parameters and the fields the data fixes
    (num_classes, channels, size); an unknown name or option is refused by name."""
    if name not in IMAGE_MODELS:
        raise ValueError(f"image model {name!r}: one of {', '.join(IMAGE_MODELS)}")
    cls = FAMILIES[name].config
    options = dict(options or {})
    data = {k: options.pop(k) for k in cls.DATA_FIELDS if k in options}
    return FAMILIES[name].model(model_config(name, options, **data))


def rebuild_image_model(config: dict[str, Any]) -> nn.Module:
    """The model a stored ``{"model": name, **config}`` describes (weights not loaded)."""
    return rebuild(config)
