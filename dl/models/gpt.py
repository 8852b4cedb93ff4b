"""A nanoGPT-style decoder-only language model: token + learned position embeddings, pre-LN blocks of
causal self-attention and a GELU MLP, a final LayerNorm and an output layer tied to the token embedding.

Trained with teacher forcing (``train.task: lm``): the input is ``<bos> w1 … wL`` and the targets are
``w1 … wL <eos>``, so every token of a text and its end are predicted from the tokens before it — the
same events the Kneser–Ney baseline (dl/models/ngram.py) scores, which makes their perplexities comparable.
Padding sits after ``<eos>`` and is never a target; with causal attention it cannot affect the targets.

``forward`` returns the logits of the real target positions only (``{"lm": (N, V), "lm_targets": (N,)}``,
N = tokens in the batch), so the ``(B, T, V)`` tensor of every padded position is never built."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from dl.models.base import ModelConfig, length_mask, make_embedding


class GptConfig(ModelConfig):
    """nanoGPT-style decoder-only language model (``train.task=lm``)."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "bos_id", "eos_id", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_len: int = Field(128, ge=1, description="longest text in tokens (the ETL's encode.max_len); the "
                         "position table holds max_len + 1 (<bos>)")
    tie_weights: bool = True
    bos_id: int = 2  # the word tokenizer's <bos> and <eos> (etl/text/textprep.py WORD_SPECIALS)
    eos_id: int = 3
    pad_id: int = 0

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"gpt d_model={self.d_model} is not divisible by heads={self.heads}")
        return self


class Block(nn.Module):
    def __init__(self, cfg: GptConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff), nn.GELU(), nn.Linear(cfg.ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.heads, self.dropout = cfg.heads, cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GptLM(nn.Module):
    def __init__(self, cfg: GptConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = make_embedding(cfg.vocab_size, cfg.d_model, cfg.pad_id)
        self.pos = nn.Parameter(torch.randn(cfg.max_len + 1, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, T) → (B, T, D)`` final hidden states of a causal pass (T ≤ max_len + 1)."""
        x = self.drop(self.embed(inputs) + self.pos[: inputs.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def teacher_forcing(self, ids: torch.Tensor, lengths: torch.Tensor):
        """Inputs ``<bos> w1 … wL`` and targets ``w1 … wL <eos>`` (B, T+1), and where targets are real."""
        ids, lengths = ids[:, : self.cfg.max_len], lengths.clamp(max=self.cfg.max_len)
        bos = torch.full_like(ids[:, :1], self.cfg.bos_id)
        inputs = torch.cat([bos, ids], 1)
        targets = torch.cat([ids, torch.full_like(bos, self.cfg.pad_id)], 1)
        targets[torch.arange(len(ids), device=ids.device), lengths] = self.cfg.eos_id
        mask = length_mask(targets, lengths + 1)
        return inputs, targets, mask

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs, targets, mask = self.teacher_forcing(ids, lengths)
        h = self.hidden(inputs)[mask]  # (N, D): the real target positions only
        return {"lm": self.out(h), "lm_targets": targets[mask]}

    @torch.no_grad()
    def generate(self, prefix: list[int], max_new: int = 30, temperature: float = 1.0, top_k: int | None = 40,
                 generator: torch.Generator | None = None) -> list[int]:
        """Sample up to ``max_new`` tokens after ``<bos> prefix``; stops at ``<eos>`` (not returned)."""
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        was_training = self.training
        self.eval()
        device = self.pos.device
        seq = [self.cfg.bos_id, *prefix]
        new: list[int] = []
        for _ in range(max_new):
            window = torch.tensor([seq[-(self.cfg.max_len + 1):]], device=device)
            logits = self.out(self.hidden(window)[0, -1]) / temperature
            logits[self.cfg.pad_id] = -math.inf
            logits[self.cfg.bos_id] = -math.inf
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -math.inf
            token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            if token == self.cfg.eos_id:
                break
            seq.append(token)
            new.append(token)
        self.train(was_training)
        return new
