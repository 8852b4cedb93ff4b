"""Text CNN (Kim 2014): parallel 1-D convolutions of several widths over the embeddings, ReLU,
max-over-time pooling over the positions that hold real tokens, dropout, task heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from dl.models.base import TaskHeads, make_embedding


@dataclass
class CnnConfig:
    vocab_size: int
    embed_dim: int = 128
    filters: int = 100  # per width
    widths: list[int] = field(default_factory=lambda: [3, 4, 5])
    dropout: float = 0.5
    freeze_embeddings: bool = False
    pad_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class TextCnn(nn.Module):
    def __init__(self, cfg: CnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = make_embedding(cfg.vocab_size, cfg.embed_dim, cfg.pad_id, cfg.freeze_embeddings)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.filters, w) for w in cfg.widths)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = TaskHeads(cfg.filters * len(cfg.widths))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
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
        return self.heads(self.drop(torch.cat(pooled, 1)))
