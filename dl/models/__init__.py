"""The model registry: every family by name, once. A family is its config class (its hyper-parameters,
defaults and checks — the train config's ``model.<family>`` section is made from it — and the fields the
data fixes; stored in the checkpoint) and its module. Text families map ``(ids, lengths)`` to the task
heads' outputs (dl/models/base.py), the language model (gpt) to next-token logits; image families map
``(B, C, H, W)`` floats in [0, 1] to class logits, or the autoencoder to a reconstruction; the GAN (dcgan)
maps noise (and a class) to images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from torch import nn

from dl.models.alexnet import AlexNetConfig, AlexNetSmall
from dl.models.autoencoder import AutoencoderConfig, ConvAutoencoder
from dl.models.base import ModelConfig
from dl.models.bert import BertClassifier, BertConfig
from dl.models.bow import BowClassifier, BowConfig
from dl.models.cnn import CnnConfig, TextCnn
from dl.models.gan import DCGAN, GanConfig
from dl.models.gpt import GptConfig, GptLM
from dl.models.lenet import LeNet5, LeNetConfig
from dl.models.resnet import ResNetConfig, ResNetSmall
from dl.models.rnn import RnnClassifier, RnnConfig
from dl.models.transformer import TransformerClassifier, TransformerConfig

CLASSIFIER_TASKS = ("sentiment", "rating", "rating_reg", "multitask")


@dataclass(frozen=True)
class Family:
    config: type[ModelConfig]
    model: type[nn.Module]
    kind: str  # "text" (the text ETL's shards) or "image" (the image ETL's datasets)
    tasks: tuple[str, ...]  # the train.task values it trains for


FAMILIES: dict[str, Family] = {
    "bow": Family(BowConfig, BowClassifier, "text", CLASSIFIER_TASKS),
    "rnn": Family(RnnConfig, RnnClassifier, "text", CLASSIFIER_TASKS),
    "cnn": Family(CnnConfig, TextCnn, "text", CLASSIFIER_TASKS),
    "transformer": Family(TransformerConfig, TransformerClassifier, "text", CLASSIFIER_TASKS),
    "bert": Family(BertConfig, BertClassifier, "text", CLASSIFIER_TASKS),
    "gpt": Family(GptConfig, GptLM, "text", ("lm",)),
    "lenet5": Family(LeNetConfig, LeNet5, "image", ("class",)),
    "alexnet_small": Family(AlexNetConfig, AlexNetSmall, "image", ("class",)),
    "resnet_small": Family(ResNetConfig, ResNetSmall, "image", ("class",)),
    "autoencoder": Family(AutoencoderConfig, ConvAutoencoder, "image", ("reconstruct",)),
    "dcgan": Family(GanConfig, DCGAN, "image", ("generate",)),
}
TEXT_MODELS = tuple(name for name, f in FAMILIES.items() if f.kind == "text")
IMAGE_MODELS = tuple(name for name, f in FAMILIES.items() if f.kind == "image")


def model_config(name: str, options: dict[str, Any] | None = None, **data: Any) -> ModelConfig:
    """Family ``name``'s config from its ``options`` (hyper-parameters) and ``data`` (the fields the data
    fixes: vocab_size, num_classes, ...); an unknown family or option is refused by name."""
    if name not in FAMILIES:
        raise ValueError(f"model {name!r}: one of {', '.join(FAMILIES)}")
    cls = FAMILIES[name].config
    allowed = set(cls.model_fields) - set(cls.DATA_FIELDS)
    unknown = sorted(set(options or {}) - set(cls.model_fields))  # a data field given as an option is taken
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(allowed))}")
    missing = [f for f in cls.REQUIRED_DATA if {**(options or {}), **data}.get(f) is None]
    if missing:
        raise ValueError(f"model {name!r} needs {', '.join(missing)} (what the data fixes)")
    try:
        return cls(**{**(options or {}), **data})
    except ValidationError as exc:
        problems = "; ".join(f"{name} {'.'.join(map(str, e['loc'])) or 'config'} {e.get('input')!r}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(problems) from None


def build_model(name: str, vocab_size: int, options: dict[str, Any] | None = None) -> nn.Module:
    """A text family's model for a vocabulary of ``vocab_size`` ids."""
    cfg = model_config(name, options, vocab_size=vocab_size)
    return FAMILIES[name].model(cfg)


def describe(name: str, model: nn.Module) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the model: ``{"model": name, **config}``."""
    return {"model": name, **model.cfg.to_dict()}


def rebuild(config: dict[str, Any]) -> nn.Module:
    """The model a checkpoint's ``config`` describes (weights not loaded)."""
    name = config["model"]
    if name not in FAMILIES:
        raise ValueError(f"model {name!r}: one of {', '.join(FAMILIES)}")
    cls = FAMILIES[name].config
    options = {k: v for k, v in config.items() if k != "model" and k not in cls.DATA_FIELDS}
    data = {k: v for k, v in config.items() if k in cls.DATA_FIELDS}
    return FAMILIES[name].model(model_config(name, options, **data))
