"""Recurrent classifiers: vanilla RNN, GRU or LSTM; 1..N layers; bidirectional; dropout between
layers; packed sequences (padding is never read); last / mean / max pooling."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dl.models.base import TaskHeads, length_mask, make_embedding, masked_pool

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class RnnConfig:
    vocab_size: int
    cell: str = "lstm"  # rnn | gru | lstm
    embed_dim: int = 128
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3  # on the embeddings, between layers and before the heads
    pooling: str = "max"  # last | mean | max
    freeze_embeddings: bool = False
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"rnn cell {self.cell!r}: one of {', '.join(CELLS)}")
        if self.pooling not in ("last", "mean", "max"):
            raise ValueError(f"rnn pooling {self.pooling!r}: last, mean or max")

    def to_dict(self) -> dict:
        return asdict(self)


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
