"""Semantic search: MiniLM embeddings computed on Spark into a Delta vector table, exact cosine search."""

from __future__ import annotations

import numpy as np
import pytest

from dl.serve.search import Encoder, build_index, search


@pytest.mark.spark
def test_semantic_search_over_review_snippets(spark, raw_data, tmp_path):
    from etl.core.tables import TableStore

    model_dir = raw_data / "minilm" / "model"
    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = spark.read.json(str(raw_data / "reviews" / "vader_amazon.jsonl")).select("review_id", "text").limit(300)
    extra = spark.createDataFrame([("mine-1", "The battery died after two days and the charger broke."),
                                   ("mine-2", "")], "review_id string, text string")
    first = build_index(store, reviews.unionByName(extra), model_dir)
    assert first["inserted"] == first["rows"] == 302
    assert build_index(store, reviews, model_dir)["inserted"] == 0  # already embedded: nothing new
    table = store.read_arrow("review_vectors").to_pydict()
    vectors = np.array(table["vector"], np.float32)
    assert vectors.shape == (302, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    at = table["review_id"].index("mine-1")  # the Spark UDF embeds exactly as the encoder does in-process
    np.testing.assert_allclose(vectors[at], Encoder(model_dir).embed([table["text"][at]])[0], atol=1e-5)
    hits = search(store, "my battery was dead two days later and the charger stopped working", model_dir, k=5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and hits[0]["review_id"] == "mine-1", hits
    assert hits[0]["score"] > hits[-1]["score"]
