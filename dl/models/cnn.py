"""Text CNN (Kim 2014): parallel 1-D convolutions of several widths over the embeddings, ReLU,
max-over-time pooling over the positions that hold real tokens, dropout, task heads.

``edge_padding`` pads each text with ``width - 1`` zero vectors on both sides (the "wide" convolution of
Kalchbrenner et al. 2014, as in Kim's code): every token is seen at every offset of every filter, so a
one-word phrase trains all of a filter's columns, not only its first."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dl.models.base import ModelConfig, TaskHeads, make_embedding


class CnnConfig(ModelConfig):
    """Kim's text CNN: convolutions of several widths over the token embeddings, max-pooled over time."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    embed_dim: int = Field(128, ge=1)
    filters: int = Field(100, ge=1, description="per width")
    widths: list[int] = Field(default_factory=lambda: [3, 4, 5], min_length=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    freeze_embeddings: bool = False
    embed_init_range: float | None = Field(None, gt=0, description="word vectors start U[-a, a] (Kim's code: "
                                           "0.25) instead of N(0, 1); pre-trained vectors replace their rows")
    edge_padding: bool = Field(False, description="pad each text with width-1 zero vectors on both sides "
                               "(wide convolution, as in Kim's code)")
    pad_id: int = 0


class TextCnn(nn.Module):
    def __init__(self, cfg: CnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = make_embedding(cfg.vocab_size, cfg.embed_dim, cfg.pad_id, cfg.freeze_embeddings,
                                    cfg.embed_init_range)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.filters, w, padding=w - 1 if cfg.edge_padding else 0)
                                   for w in cfg.widths)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = TaskHeads(cfg.filters * len(cfg.widths))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self._pool_wide(ids, lengths) if self.cfg.edge_padding else self._pool(ids, lengths)
        return self.heads(self.drop(pooled))

    def _pool(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        widest = max(self.cfg.widths)
        if ids.shape[1] < widest:  # a window must fit; pad ids embed to zeros
            ids = F.pad(ids, (0, widest - ids.shape[1]), value=self.cfg.pad_id)
        x = self.embed(ids).transpose(1, 2)  # (B, E, T)
        pooled = []
        for width, conv in zip(self.cfg.widths, self.convs, strict=True):
            c = F.relu(conv(x))  # (B, F, T - w + 1)
            # window t covers tokens t..t+w-1: keep windows that start inside the text (at least one)
            last = (lengths - width).clamp(min=0)  # (B,)
            valid = torch.arange(c.shape[2], device=c.device)[None, :] <= last[:, None]  # (B, T - w + 1)
            pooled.append(c.masked_fill(~valid[:, None, :], float("-inf")).amax(2))  # (B, F)
        return torch.cat(pooled, 1)

    def _pool_wide(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        x = (self.embed(ids) * real[..., None]).transpose(1, 2)  # (B, E, T): beyond the length reads as zeros
        pooled = []
        for width, conv in zip(self.cfg.widths, self.convs, strict=True):
            c = F.relu(conv(x))  # (B, F, T + w - 1): window t covers tokens t-w+1..t
            valid = torch.arange(c.shape[2], device=c.device)[None, :] <= (lengths + width - 2)[:, None]
            pooled.append(c.masked_fill(~valid[:, None, :], float("-inf")).amax(2))
        return torch.cat(pooled, 1)
