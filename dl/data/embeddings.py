"""Initialization of a model's embedding table from word2vec-format vectors (etl/core/wordvec.py) for a
tokenizer's vocabulary."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from etl.core.errors import InputError
from etl.core.wordvec import read_word2vec


def init_from_vectors(embed: torch.nn.Embedding, vocab: Sequence[str], path: str | os.PathLike,
                      lowercase_fallback: bool = True) -> dict:
    """Copy the vector of each vocabulary word found in ``path`` into its embedding row (the row index is
    the token id); other rows keep their random init, rescaled to the vectors' spread. Returns coverage."""
    from dl.models.base import load_pretrained

    lookup = {w: w for w in vocab}
    if lowercase_fallback:
        lookup.update({w.lower(): w for w in vocab if w.lower() not in lookup})
    words, vectors = read_word2vec(path, wanted=lookup)
    if vectors.shape[0] and vectors.shape[1] != embed.embedding_dim:
        raise InputError(f"{path} has {vectors.shape[1]}-d vectors but the model's embeddings are "
                         f"{embed.embedding_dim}-d: set the model's embed_dim to {vectors.shape[1]}")
    index = {w: i for i, w in enumerate(vocab)}
    table = torch.zeros(len(vocab), embed.embedding_dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    for word, vec in zip(words, vectors, strict=True):
        i = index[lookup[word]]
        if not found[i] or word == vocab[i]:  # an exact-case match wins over the lowercase fallback
            table[i], found[i] = torch.from_numpy(vec), True
    if found.any():
        with torch.no_grad():  # random rows on the same scale as the pretrained ones
            embed.weight.mul_(table[found].std() / embed.weight.std().clamp(min=1e-8))
    load_pretrained(embed, table, found)
    return {"vocab": len(vocab), "found": int(found.sum()), "coverage": round(float(found.float().mean()), 4)}
