"""Bag-of-embeddings baseline (fastText-style): masked mean of token embeddings → MLP → task heads."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from dl.models.base import HEADS, ModelConfig


class BowConfig(ModelConfig):
    """Bag of words: the mean of the token embeddings through one hidden layer."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    embed_dim: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_norm: bool = False
    pad_id: int = 0


class BowClassifier(nn.Module):
    def __init__(self, cfg: BowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        layers: list[nn.Module] = [nn.Linear(cfg.embed_dim, cfg.hidden)]
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(cfg.hidden))
        layers += [nn.ReLU(), nn.Dropout(cfg.dropout)]
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.hidden, n) for name, n in HEADS.items()})

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).float()  # (B, T)
        summed = (self.embed(ids) * mask[..., None]).sum(1)  # (B, C)
        pooled = summed / lengths.clamp(min=1)[:, None].float()  # (B, C)
        h = self.body(pooled)  # (B, H)
        out = {name: head(h) for name, head in self.heads.items()}
        out["rating_reg"] = out["rating_reg"].squeeze(-1)  # (B,)
        return out
