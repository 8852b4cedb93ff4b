"""What every text model shares: the task heads on a pooled representation, padding masks, and
embedding tables that can start from pretrained vectors (frozen or fine-tuned).

Every model maps ``(ids (B, T), lengths (B,))`` to ``{"sentiment": (B, 2), "rating": (B, 5),
"rating_reg": (B,)}``; padded positions (``t >= length``) never change the result."""

from __future__ import annotations

import torch
from torch import nn

HEADS = {"sentiment": 2, "rating": 5, "rating_reg": 1}


def length_mask(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` True where a position holds a real token."""
    return torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]


class TaskHeads(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in HEADS.items()})

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: head(h) for name, head in self.heads.items()}
        out["rating_reg"] = out["rating_reg"].squeeze(-1)  # (B,)
        return out


def make_embedding(vocab_size: int, dim: int, pad_id: int, freeze: bool = False) -> nn.Embedding:
    embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
    embed.weight.requires_grad_(not freeze)
    return embed


def load_pretrained(embed: nn.Embedding, vectors: torch.Tensor, found: torch.Tensor) -> None:
    """Copy ``vectors[i]`` into row i where ``found[i]``; the other rows keep their random init and the
    padding row stays zero."""
    with torch.no_grad():
        embed.weight[found] = vectors[found].to(embed.weight.dtype)
        if embed.padding_idx is not None:
            embed.weight[embed.padding_idx].zero_()


def masked_pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``h (B, T, C)`` pooled over the real positions: ``mean`` or ``max``."""
    if how == "mean":
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "max":
        return h.masked_fill(~mask[..., None], torch.finfo(h.dtype).min).amax(1)
    raise ValueError(f"pooling {how!r}: mean or max")
