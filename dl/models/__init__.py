"""Model families by name. Each is a config dataclass (stored in the checkpoint) and a module mapping
``(ids, lengths)`` to the task heads' outputs (dl/models/base.py), or for the language model (gpt) to
next-token logits. The image families are in dl/models/vision.py; ``rebuild`` serves both."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from dl.models.bert import BertClassifier, BertConfig
from dl.models.bow import BowClassifier, BowConfig
from dl.models.cnn import CnnConfig, TextCnn
from dl.models.gpt import GptConfig, GptLM
from dl.models.rnn import RnnClassifier, RnnConfig
from dl.models.transformer import TransformerClassifier, TransformerConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "bow": (BowConfig, BowClassifier),
    "rnn": (RnnConfig, RnnClassifier),
    "cnn": (CnnConfig, TextCnn),
    "transformer": (TransformerConfig, TransformerClassifier),
    "bert": (BertConfig, BertClassifier),
    "gpt": (GptConfig, GptLM),  # a language model: train.task=lm
}


def model_config(name: str, vocab_size: int, options: dict[str, Any] | None = None):
    """The config dataclass of model ``name``; an option the family does not have is refused by name."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}: one of {', '.join(MODELS)}")
    cls = MODELS[name][0]
    allowed = {f.name for f in dataclasses.fields(cls)} - {"vocab_size"}
    unknown = sorted(set(options or {}) - allowed)
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(allowed))}")
    return cls(vocab_size=vocab_size, **(options or {}))


def build_model(name: str, vocab_size: int, options: dict[str, Any] | None = None) -> nn.Module:
    cfg = model_config(name, vocab_size, options)
    return MODELS[name][1](cfg)


def describe(name: str, model: nn.Module) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the model: ``{"model": name, **config}``."""
    return {"model": name, **model.cfg.to_dict()}


def rebuild(config: dict[str, Any]) -> nn.Module:
    """The model a checkpoint's ``config`` describes (weights not loaded)."""
    from dl.models.vision import IMAGE_MODELS, rebuild_image_model

    if config["model"] in IMAGE_MODELS:
        return rebuild_image_model(config)
    options = {k: v for k, v in config.items() if k not in ("model", "vocab_size")}
    return build_model(config["model"], config["vocab_size"], options)
