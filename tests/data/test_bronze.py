"""Bronze load of the real VADER corpora plus generated malformed lines: nothing lost, re-runs add nothing;
the text ETL reads what bronze gained and never opens a raw file."""

from __future__ import annotations

import json
import shutil

import pytest

from etl.bronze import counts_by_source, load_bronze
from etl.core.tables import TableError, TableStore
from etl.text.pipeline import run_text_etl
from jobs.configs import load_config

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
    assert first.rows_corrupt == 2  # the two lines that are not JSON objects
    assert first.rows_inserted == total
    table = store.read("bronze_reviews")
    assert table.count() == total
    by_source = counts_by_source(table)
    assert {k: v for k, v in by_source.items() if k.startswith("vader")} == VADER
    assert by_source["edge"] == 3 and by_source["<none>"] == 2
    # every field is kept as text, as read: typing and its quarantine reasons belong to the text ETL
    wrong_type = table.filter("review_id = 'edge-3'").first()
    assert wrong_type["stars"] == "five" and wrong_type["_malformed"] is None and '"stars": "five"' in wrong_type["raw"]
    malformed = {r["raw"] for r in table.filter("_malformed = 'malformed_json'").collect()}
    assert malformed == {'{"review_id": "edge-2", "text": "truncated', "not json at all"}
    assert table.filter("source_file LIKE '%edge.jsonl'").count() == 5

    again = load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-2")
    assert again.rows_inserted == 0 and again.version == first.version
    assert store.count("bronze_reviews") == total

    (reviews_dir / "more.jsonl").write_text(json.dumps({"review_id": "new-1", "text": "new", "source": "edge"}) + "\n")
    third = load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-3")
    assert third.rows_inserted == 1 and third.version == first.version + 1
    assert store.read("bronze_reviews").filter("ingest_run_id = 'run-3'").count() == 1


def test_text_etl_reads_what_bronze_gained_and_opens_no_raw_file(spark, reviews_dir, tmp_path):
    store = TableStore(tmp_path / "tables", spark)
    load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "bronze-1")
    cfg = load_config("etl_text", overrides=[
        "input.format=bronze", "input.table=bronze_reviews", f"paths.tables_dir={tmp_path / 'tables'}",
        f"output.shards_dir={tmp_path / 'shards'}", "output.name=vader"])
    files = run_text_etl(load_config("etl_text", overrides=[
        f"input.paths={json.dumps([str(reviews_dir)])}", f"paths.tables_dir={tmp_path / 'tables'}",
        f"output.shards_dir={tmp_path / 'shards'}", "output.name=vader_files"]), spark, "etl-files")
    parked = tmp_path / "parked"
    reviews_dir.rename(parked)  # the raw files are gone: the ETL can only read bronze
    first = run_text_etl(cfg, spark, "etl-1")
    assert first.rows_read == sum(VADER.values()) + 5 and first.bronze_table == "bronze_reviews"
    # the same rows, verdicts and reasons as the ETL of the files themselves
    assert (first.rows_kept, first.rows_quarantined, first.reasons) == (files.rows_kept, files.rows_quarantined,
                                                                         files.reasons)
    assert first.reasons["malformed_json"] == 2
    assert first.bronze_version == store.version("bronze_reviews")

    again = run_text_etl(cfg, spark, "etl-2")  # bronze gained nothing: nothing read
    assert (again.rows_read, again.rows_kept, again.bronze_version) == (0, 0, first.bronze_version)

    parked.rename(reviews_dir)
    (reviews_dir / "more.jsonl").write_text(
        json.dumps({"review_id": "new-1", "text": "a new review", "source": "edge"}) + "\n"
        + json.dumps({"review_id": "new-2", "text": "another one", "source": "edge"}) + "\n")
    load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "bronze-2")
    reviews_dir.rename(parked)
    third = run_text_etl(cfg, spark, "etl-3")
    assert (third.rows_read, third.rows_kept, third.rows_quarantined) == (2, 2, 0)  # only the new rows
    assert third.bronze_version == first.bronze_version + 1
    assert store.count("silver_vader") == first.rows_kept + 2
    runs = {r["run_id"]: r for r in store.read_arrow("etl_runs").to_pylist()}
    assert runs["etl-3"]["bronze_version"] == third.bronze_version and runs["etl-3"]["rows_read"] == 2


def test_bronze_of_the_old_typed_layout_is_refused_with_what_to_do(spark, tmp_path, reviews_dir):
    store = TableStore(tmp_path / "tables", spark)
    store.write("bronze_reviews", spark.createDataFrame([("r1", 5.0)], "review_id string, stars double"))
    with pytest.raises(TableError, match="move .* aside and run `lakedl bronze load` again"):
        load_bronze(spark, store, str(reviews_dir), "bronze_reviews", "run-1")
