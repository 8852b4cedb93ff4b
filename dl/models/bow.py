"""Bag-of-embeddings baseline (fastText-style): masked mean of token embeddings → MLP → task heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from dl.models.base import HEADS


@dataclass
class BowConfig:
    vocab_size: int
    embed_dim: int = 64
    hidden: int = 64
    dropout: float = 0.1
    batch_norm: bool = False
    pad_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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
