"""What every text model shares: the task heads on a pooled representation, padding masks, and
embedding tables that can start from pretrained vectors (frozen or fine-tuned).

Every model maps ``(ids (B, T), lengths (B,))`` to ``{"sentiment": (B, 2), "rating": (B, 5),
"rating_reg": (B,)}``; padded positions (``t >= length``) never change the result."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_validator
from torch import nn

HEADS = {"sentiment": 2, "rating": 5, "rating_reg": 1}


class ModelConfig(BaseModel):
    """Base of every model family's config, kept beside the model (as nanoGPT keeps GPTConfig beside GPT):
    the family's hyper-parameters with their defaults and checks — the one place they are declared; the
    train config's ``model.<family>`` section is made from it (``options_section``) — plus the fields the
    data fixes (``DATA_FIELDS``: vocabulary size, classes, image size), which the data adapter sets. The
    checkpoint stores the whole config, so the model is rebuilt from it alone."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ()
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ()  # data fields without which no model can be built

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def options_section(cls, base: type[BaseModel]) -> type[BaseModel]:
        """The hyper-parameters alone (no data fields), as a config section class derived from ``base``."""
        fields = {name: (f.annotation, f) for name, f in cls.model_fields.items() if name not in cls.DATA_FIELDS}

        def family_checks(section):  # the family's own cross-field checks (e.g. d_model % heads)
            try:
                cls(**section.model_dump())
            except ValidationError as exc:
                raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
            return section

        return create_model(f"{cls.__name__}Options", __base__=base, __doc__=cls.__doc__,
                            __validators__={"family_checks": model_validator(mode="after")(family_checks)}, **fields)


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


def make_embedding(vocab_size: int, dim: int, pad_id: int, freeze: bool = False,
                   init_range: float | None = None) -> nn.Embedding:
    """Token vectors N(0, 1) (PyTorch's default) or, with ``init_range`` a, U[-a, a] (Kim 2014's 0.25: with
    300 dimensions N(0, 1) vectors have norm ~17, ~7x his); the padding row is zero either way."""
    embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
    if init_range is not None:
        with torch.no_grad():
            embed.weight.uniform_(-init_range, init_range)
            embed.weight[pad_id].zero_()
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
