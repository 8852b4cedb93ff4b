"""Transformer encoder classifier from scratch: pre-LN encoder layers, learned or sinusoidal positions,
[CLS], mean or max pooling, key-padding masks so padded positions are never attended to."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from dl.models.base import ModelConfig, TaskHeads, length_mask, make_embedding, masked_pool


class TransformerConfig(ModelConfig):
    """Transformer encoder classifier: learned or sinusoidal positions; cls, mean or max pooling."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    positions: Literal["learned", "sinusoidal"] = "learned"
    pooling: Literal["cls", "mean", "max"] = "cls"
    max_len: int = Field(512, ge=1)
    freeze_embeddings: bool = False
    pad_id: int = 0

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"transformer d_model={self.d_model} is not divisible by heads={self.heads}")
        return self


def sinusoidal(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10_000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return table


class TransformerClassifier(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = make_embedding(cfg.vocab_size, cfg.d_model, cfg.pad_id, cfg.freeze_embeddings)
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_len + 1, cfg.d_model) * 0.02)
        else:
            self.register_buffer("pos", sinusoidal(cfg.max_len + 1, cfg.d_model), persistent=False)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = TaskHeads(cfg.d_model)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        ids, lengths = ids[:, : self.cfg.max_len], lengths.clamp(max=self.cfg.max_len)
        # no sqrt(d_model) scaling: that suits embeddings initialised with std d^-0.5, while these start at
        # N(0, 1) or pretrained vectors, and scaling them would drown the positions (std 0.02)
        x = self.embed(ids)  # (B, T, D)
        x = torch.cat([self.cls.expand(len(ids), -1, -1), x], 1)  # (B, 1 + T, D), [CLS] first
        x = self.drop(x + self.pos[: x.shape[1]])
        mask = torch.cat([torch.ones_like(ids[:, :1], dtype=torch.bool), length_mask(ids, lengths)], 1)  # (B, 1+T)
        h = self.norm(self.encoder(x, src_key_padding_mask=~mask))  # (B, 1 + T, D)
        pooled = h[:, 0] if self.cfg.pooling == "cls" else masked_pool(h[:, 1:], mask[:, 1:], self.cfg.pooling)
        return self.heads(self.drop(pooled))
