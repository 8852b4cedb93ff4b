"""Semantic search over reviews: MiniLM sentence embeddings (mean pooling over real tokens, L2-normalized,
as all-MiniLM-L6-v2 was trained) computed on Spark by an iterator pandas UDF into a Delta vector table,
and exact cosine search over it (``lakedl embed`` / ``lakedl search "query" -k 10``).

The search is exact (one matrix product over the table's vectors), so there is no recall to trade;
an ANN index (FAISS/HNSW) would be the step for tables of many millions of rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from etl.core.errors import MissingInput

_ENCODERS: dict[str, object] = {}  # model dir -> Encoder, per Python worker


class Encoder:
    """The pretrained MiniLM encoder and its WordPiece tokenizer, loaded offline from ``model_dir``."""

    def __init__(self, model_dir: str | os.PathLike, max_len: int = 128) -> None:
        from dl.models import build_model
        from etl.text.textprep import load_minilm

        self.tokenizer = load_minilm(model_dir)
        classifier = build_model("bert", self.tokenizer.vocab_size, {"pretrained": str(model_dir)})
        self.model = classifier.encoder.eval()
        self.max_len = max_len
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``(N, dim)`` float32, unit length."""
        out = []
        for start in range(0, len(texts), batch_size):
            ids = self.tokenizer.encode([t or "" for t in texts[start:start + batch_size]], self.max_len)
            longest = max(len(x) for x in ids)
            batch = torch.zeros(len(ids), longest, dtype=torch.long)
            for i, row in enumerate(ids):
                batch[i, : len(row)] = torch.tensor(row)
            mask = (torch.arange(longest)[None, :] < torch.tensor([len(x) for x in ids])[:, None])
            h = self.model(input_ids=batch, attention_mask=mask.long()).last_hidden_state
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def _encoder(model_dir: str) -> Encoder:
    if model_dir not in _ENCODERS:
        _ENCODERS[model_dir] = Encoder(model_dir)
    return _ENCODERS[model_dir]


def embed_frame(df, model_dir: str | os.PathLike, text_col: str = "text", id_col: str = "review_id"):
    """``df`` → (``id_col``, ``text_col``, ``vector`` array<float>) through an iterator pandas UDF that loads
    the encoder once per Python worker."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    path = str(Path(model_dir).absolute())
    if not (Path(path) / "config.json").is_file():
        raise MissingInput(f"{path}: no MiniLM model there; `lakedl data fetch --source minilm` writes "
                                "data/raw/minilm/model")

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        encoder = _encoder(path)
        for texts in batches:
            yield pd.Series(list(encoder.embed(texts.fillna("").astype(str).tolist())))

    return df.select(id_col, text_col, embed(F.col(text_col)).alias("vector"))


def build_index(store, df, model_dir: str | os.PathLike, table: str = "review_vectors", text_col: str = "text",
                id_col: str = "review_id") -> dict:
    """Embed the rows of ``df`` not in ``table`` yet and MERGE them in (keyed by ``id_col``)."""
    todo = df.select(id_col, text_col)
    if store.exists(table):
        todo = todo.join(store.read(table).select(id_col), id_col, "left_anti")
    result = store.merge(table, embed_frame(todo, model_dir, text_col, id_col), keys=[id_col], update_matched=False)
    return {"table": table, "inserted": result.inserted, "version": result.version, "rows": store.count(table)}


def search(store, query: str, model_dir: str | os.PathLike, k: int = 10, table: str = "review_vectors",
           id_col: str = "review_id", text_col: str = "text") -> list[dict]:
    """The ``k`` rows of ``table`` nearest to ``query`` by cosine similarity, best first."""
    if not store.exists(table):
        from etl.core.tables import TableError

        raise TableError(f"no vector table {table!r} under {store.root}: build it with `lakedl embed --source TABLE` "
                         "(or --input FILES) first")
    data = store.read_arrow(table, columns=[id_col, text_col, "vector"])
    if data.num_rows == 0:
        return []
    vectors = np.asarray(data.column("vector").combine_chunks().flatten().to_numpy(), np.float32).reshape(data.num_rows, -1)
    q = _encoder(str(Path(model_dir).absolute())).embed([query])[0]
    scores = vectors @ q
    top = np.argsort(-scores)[:k]
    ids, texts = data.column(id_col).to_pylist(), data.column(text_col).to_pylist()
    return [{"rank": r + 1, id_col: ids[i], "score": round(float(scores[i]), 4), text_col: texts[i]}
            for r, i in enumerate(top)]
