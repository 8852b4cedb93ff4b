"""The word2vec corpus: the text ETL's word-level shards as one flat array of word ids with sentence
offsets, the vocabulary's counts, the unigram^0.75 noise table and the subsampling probabilities.

The ETL's vocabulary (min-count and size cut by the Spark vocab job) is the model's vocabulary, minus the
tokenizer's specials: out-of-vocabulary words (``<unk>``) are dropped from the sentences, as gensim drops
words outside its vocabulary, so both systems train on the same word sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etl.core.errors import InputError, MissingInput

SPLITS = ("train", "dev", "test")
NOISE_DOMAIN = 2**31 - 1  # gensim's cum_table domain


@dataclass
class Corpus:
    words: list[str]  # id -> word
    counts: np.ndarray  # int64 (V,): occurrences in the sentences
    tokens: np.ndarray  # int32: every sentence's word ids, concatenated
    offsets: np.ndarray  # int64 (S + 1,): sentence s is tokens[offsets[s]:offsets[s + 1]]
    tokenizer_sha256: str = ""

    @property
    def total_words(self) -> int:
        return int(self.offsets[-1])

    @property
    def sentences(self) -> int:
        return len(self.offsets) - 1

    def sentence_words(self, ids: np.ndarray) -> list[list[str]]:
        """The sentences as lists of words (what gensim and Spark MLlib are given)."""
        vocab = np.asarray(self.words, dtype=object)
        return [vocab[self.tokens[self.offsets[s]:self.offsets[s + 1]]].tolist() for s in ids]


def load_corpus(shards: str | Path, splits: tuple[str, ...] = SPLITS) -> Corpus:
    """Read the ``ids`` column of the shards' splits (in shard order) into a :class:`Corpus`."""
    import pyarrow.dataset as ds

    from etl.text.textprep import WORD_SPECIALS, TextTokenizer

    shards = Path(shards)
    manifest_path = shards / "manifest.json"
    if not manifest_path.is_file():
        raise MissingInput(f"{manifest_path} not found: build the corpus first (`lakedl w2v corpus`)")
    manifest = json.loads(manifest_path.read_text())
    tokenizer = TextTokenizer.load(shards / manifest["tokenizer_artifact"])
    if tokenizer.kind != "word":
        raise InputError(f"{shards} was tokenized with {tokenizer.kind!r}; word2vec needs tokenize.kind=word")
    specials = len(WORD_SPECIALS)
    words = tokenizer.vocabulary()[specials:]
    pieces, lengths = [], []
    for split in splits:
        files = sorted((shards / split).glob("*.parquet"))
        if not files:
            continue
        column = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["ids"]).column("ids")
        for chunk in column.chunks:
            flat = chunk.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            row_of = np.repeat(np.arange(len(chunk)), np.diff(chunk.offsets.to_numpy()))
            keep = flat >= specials  # drop <pad>, <unk>, <bos>, <eos>
            pieces.append((flat[keep] - specials).astype(np.int32))
            lengths.append(np.bincount(row_of[keep], minlength=len(chunk)))
    if not pieces:
        raise MissingInput(f"{shards} has no Parquet files under {', '.join(splits)}")
    tokens = np.concatenate(pieces)
    sentence_lengths = np.concatenate(lengths)
    sentence_lengths = sentence_lengths[sentence_lengths > 0]  # a sentence of unknown words only trains nothing
    offsets = np.zeros(len(sentence_lengths) + 1, np.int64)
    np.cumsum(sentence_lengths, out=offsets[1:])
    counts = np.bincount(tokens, minlength=len(words)).astype(np.int64)
    return Corpus(words, counts, tokens, offsets, tokenizer.sha256)


def noise_table(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    """Cumulative integer weights of ``count ** exponent`` over ``[0, 2**31 - 1]``, as gensim's cum_table:
    a uniform integer in ``[0, cum[-1])`` falls in word i's interval with probability ∝ count_i^exponent."""
    weights = np.asarray(counts, np.float64) ** exponent
    if weights.sum() <= 0:
        raise InputError("the vocabulary has no counts: is the corpus empty?")
    return np.round(np.cumsum(weights) / weights.sum() * NOISE_DOMAIN).astype(np.int64)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each occurrence of a word (Mikolov's subsampling, gensim's formula):
    ``(sqrt(c / t) + 1) * t / c`` with ``t = sample * total``, capped at 1; ``sample=0`` keeps all."""
    counts = np.asarray(counts, np.float64)
    if sample <= 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(counts / threshold) + 1) * (threshold / counts)
    return np.minimum(np.nan_to_num(p, nan=1.0, posinf=1.0), 1.0)


def keep_thresholds(p: np.ndarray) -> np.ndarray:
    """Keep probabilities as the kernels take them: ``round(p * 2**32)`` (uint64; 2**32 keeps always)."""
    return np.round(np.asarray(p, np.float64) * 2.0**32).astype(np.uint64)


def rank_sentences(corpus: Corpus, rank: int, world: int) -> np.ndarray:
    """This rank's sentences: every ``world``-th, from ``rank`` (each rank gets a similar mix)."""
    return np.arange(rank, corpus.sentences, world, dtype=np.int64)


def split_chunks(sentences: np.ndarray, offsets: np.ndarray, n: int) -> list[np.ndarray]:
    """``sentences`` cut into ``n`` consecutive chunks of about equal word counts (some may be empty)."""
    words = np.cumsum(offsets[sentences + 1] - offsets[sentences])
    if len(words) == 0:
        return [sentences[:0]] * n
    bounds = np.searchsorted(words, np.linspace(0, words[-1], n + 1)[1:-1], side="right")
    return np.split(sentences, bounds)
