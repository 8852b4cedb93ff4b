"""Recurrent classifiers: vanilla RNN, GRU or LSTM; 1..N layers; bidirectional; dropout between
layers; packed sequences (padding is never read); last / mean / max pooling."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dl.models.base import ModelConfig, TaskHeads, length_mask, make_embedding, masked_pool

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RnnConfig(ModelConfig):
    """Recurrent classifier: vanilla RNN, GRU or LSTM over the token embeddings, pooled."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    embed_dim: int = Field(128, ge=1)
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.3, ge=0, lt=1, description="on the embeddings, between layers and before the heads")
    pooling: Literal["last", "mean", "max"] = "max"
    freeze_embeddings: bool = False
    pad_id: int = 0


class RnnClassifier(nn.Module):
    def __init__(self, cfg: RnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = make_embedding(cfg.vocab_size, cfg.embed_dim, cfg.pad_id, cfg.freeze_embeddings)
        self.rnn = CELLS[cfg.cell](cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                                   bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = TaskHeads(cfg.hidden * (2 if cfg.bidirectional else 1))

    def states(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's hidden state at every position, ``(B, T', D*H)`` (forward units first, then the
        backward ones; zero past each length): what the LSTM-Vis heatmap shows."""
        packed = pack_padded_sequence(self.embed(ids), lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        seq, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
        return seq

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.drop(self.embed(ids))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.cfg.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
            h = torch.cat([h_n[-2], h_n[-1]], -1) if self.cfg.bidirectional else h_n[-1]  # (B, D*H)
        else:
            seq, _ = pad_packed_sequence(out, batch_first=True)  # (B, T', D*H), T' = longest length
            h = masked_pool(seq, length_mask(seq, lengths.clamp(min=1)), self.cfg.pooling)
        return self.heads(self.drop(h))
