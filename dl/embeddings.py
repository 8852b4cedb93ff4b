"""Word vectors in the word2vec formats (text and binary, as gensim's ``KeyedVectors`` reads and writes
them), and initialization of a model's embedding table from them for a tokenizer's vocabulary."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch


def write_word2vec(path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray, binary: bool = True) -> Path:
    """``N D`` header, then one word per line with its D floats (text) or D little-endian float32 (binary)."""
    vectors = np.asarray(vectors, dtype="<f4")
    if vectors.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but {vectors.shape[0]} vectors")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for word, vec in zip(words, vectors, strict=True):
            if not word or any(c.isspace() for c in word):
                raise ValueError(f"word {word!r} is empty or holds whitespace; the format cannot store it")
            if binary:
                fh.write(word.encode() + b" " + vec.tobytes() + b"\n")
            else:
                fh.write((word + " " + " ".join(f"{x:.6g}" for x in vec) + "\n").encode())
    os.replace(tmp, out)
    return out


def read_word2vec(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Words and ``(N, D)`` float32 vectors of a word2vec text or binary file (detected), keeping only
    ``wanted`` words when given (reading stays streaming, so a 340k-word file is cheap to filter)."""
    keep = set(wanted) if wanted is not None else None
    words: list[str] = []
    rows: list[np.ndarray] = []
    with Path(path).open("rb") as fh:
        header = fh.readline().split()
        if len(header) != 2:
            raise ValueError(f"{path}: not word2vec format (first line should be '<count> <dim>')")
        count, dim = int(header[0]), int(header[1])
        binary = _is_binary(fh, dim)
        for _ in range(count):
            if binary:
                word = _read_word(fh)
                vec = np.frombuffer(fh.read(4 * dim), dtype="<f4")
                if fh.peek(1)[:1] == b"\n":
                    fh.read(1)
            else:
                parts = fh.readline().rstrip(b"\n").split(b" ")
                word, vec = parts[0].decode(), np.asarray(parts[1:dim + 1], dtype=np.float32)
            if len(vec) != dim:
                raise ValueError(f"{path}: truncated vector for {word!r}")
            if keep is None or word in keep:
                words.append(word)
                rows.append(vec.astype(np.float32))
    return words, np.stack(rows) if rows else np.zeros((0, dim), np.float32)


def _is_binary(fh, dim: int) -> bool:
    line = fh.peek(4096).split(b"\n", 1)[0]
    try:
        parts = line.decode().split(" ")
        return not (len(parts) >= dim + 1 and all(_is_float(p) for p in parts[1:dim + 1]))
    except UnicodeDecodeError:
        return True


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_word(fh) -> str:
    buf = bytearray()
    while (c := fh.read(1)) != b" ":
        if not c:
            raise ValueError("unexpected end of file inside a word")
        buf += c
    return buf.decode("utf-8", errors="replace")


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
        raise ValueError(f"{path} has {vectors.shape[1]}-d vectors but the model's embeddings are "
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
