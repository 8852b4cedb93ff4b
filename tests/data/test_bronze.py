"""Bronze load of the real VADER corpora plus generated malformed lines: nothing lost, re-runs add nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from etl.bronze import counts_by_source, load_bronze
from etl.tables import TableStore

pytestmark = pytest.mark.spark

VADER = {"vader_amazon": 3708, "vader_movie": 10605, "vader_nyt": 5190, "vader_tweets": 4200}


@pytest.fixture
def reviews_dir(raw_data, tmp_path):
    src = tmp_path / "reviews"
    shutil.copytree(raw_data / "reviews", src, ignore=shutil.ignore_patterns("sst_*", "_*"))
    edge = [json.dumps({"review_id": "edge-1", "text": "fine", "stars": 5, "source": "edge"}),
            '{"review_id": "edge-2", "text": "truncated',         # malformed JSON
            "not json at all",                                     # malformed
            json.dumps({"review_id": "edge-3", "stars": "five", "source": "edge"}),  # wrong type
            json.dumps({"review_id": "edge-4", "text": "", "source": "edge"})]      # empty text (kept raw)
    (src / "edge.jsonl").write_text("\n".join(edge) + "\n")
    return src


def test_bronze_keeps_every_row_and_rerun_inserts_nothing(spark, reviews_dir, tmp_path):
    store = TableStore(tmp_path / "tables", spark)
    first = load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-1")
    total = sum(VADER.values()) + 5
    assert first.rows_read == total
    assert first.rows_corrupt == 3  # two malformed lines and one wrongly typed field
    assert first.rows_inserted == total
    table = store.read("bronze_reviews")
    assert table.count() == total
    by_source = counts_by_source(table)
    assert {k: v for k, v in by_source.items() if k.startswith("vader")} == VADER
    # Spark keeps the fields it could parse of the wrongly typed row, with its raw text beside them
    assert by_source["edge"] == 3 and by_source["<none>"] == 2
    wrong_type = table.filter("review_id = 'edge-3'").first()
    assert wrong_type["stars"] is None and '"stars": "five"' in wrong_type["_corrupt_record"]
    corrupt = {r["_corrupt_record"] for r in table.filter("_corrupt_record IS NOT NULL").collect()}
    assert '{"review_id": "edge-2", "text": "truncated' in corrupt and "not json at all" in corrupt
    assert table.filter("source_file LIKE '%edge.jsonl'").count() == 5

    again = load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-2")
    assert again.rows_inserted == 0 and again.version == first.version
    assert store.count("bronze_reviews") == total

    (reviews_dir / "more.jsonl").write_text(json.dumps({"review_id": "new-1", "text": "new", "source": "edge"}) + "\n")
    third = load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-3")
    assert third.rows_inserted == 1 and third.version == first.version + 1
    assert store.read("bronze_reviews").filter("ingest_run_id = 'run-3'").count() == 1
