"""Word vectors in the word2vec formats (text and binary, as gensim's ``KeyedVectors`` reads and writes
them): written by ``lakedl data fetch --source glove100`` and by word2vec runs, read to initialize a
model's embedding table (dl/data/embeddings.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from etl.core.errors import InputError


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
            raise InputError(f"{path}: not word2vec format (first line should be '<count> <dim>')")
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
                raise InputError(f"{path}: truncated vector for {word!r}")
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
