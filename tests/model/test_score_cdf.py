"""Incremental scoring from the source's change data feed: inserts scored, edited texts scored again (their
prediction replaced), deleted rows' predictions removed, exactly once per source version (a Delta application
transaction in the predictions commit), on real review texts and a real SparkSession."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark


def _reviews(spark, raw_data, name="vader_amazon.jsonl"):
    return spark.read.json(str(raw_data / "reviews" / name)).select("review_id", "text")


def _predictions(store) -> dict[str, tuple[str, float]]:
    rows = store.read_arrow("predictions").to_pylist()
    assert len(rows) == len({r["review_id"] for r in rows})  # one prediction per id and model version
    return {r["review_id"]: (r["label"], r["p_positive"]) for r in rows}


def _source(store) -> dict[str, str]:
    return {r["review_id"]: r["text"] for r in store.read("reviews").collect()}


def test_inserts_updates_and_deletes_are_scored_from_the_change_feed(spark, bundle, raw_data, tmp_path):
    import deltalake
    from pyspark.sql import functions as F

    from dl.serve.bundle import load_bundle
    from dl.serve.score import score_incremental
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = _reviews(spark, raw_data).orderBy("review_id")
    store.write("reviews", reviews.limit(300).repartition(3))
    first = score_incremental(store, "reviews", bundle)
    assert (first["path"], first["rows_scored"]) == ("anti_join", 300)

    # inserts: an append
    store.write("reviews", reviews.limit(350).join(reviews.limit(300), "review_id", "left_anti"))
    run = score_incremental(store, "reviews", bundle)
    assert (run["path"], run["consumed_from"], run["watermark"]) == ("cdf", 0, 1)
    assert (run["rows_read"], run["rows_scored"], run["rows_inserted"], run["rows_updated"]) == (50, 50, 50, 0)

    # updates through our copy-on-write MERGE: its rewritten files show every row they hold as a delete and an
    # insert; the 20 whose text changed are scored again, the rest of those files are skipped
    ids = sorted(_source(store))
    edited = spark.createDataFrame([(i, f"awful awful {n} bad") for n, i in enumerate(ids[:20])],
                                   "review_id string, text string")
    store.merge("reviews", edited, keys=["review_id"])
    run = score_incremental(store, "reviews", bundle)
    assert (run["rows_scored"], run["rows_updated"], run["rows_inserted"], run["rows_deleted"]) == (20, 20, 0, 0)
    assert run["rows_read"] == run["rows_scored"] + run["rows_skipped"] and run["rows_skipped"] > 0

    # deletes and updates by delta-rs itself, which writes change files (delete, update_preimage/postimage);
    # an update to a blank text is quarantined and its old prediction removed; a row inserted and deleted
    # between two runs is never scored
    table = deltalake.DeltaTable(str(store.path("reviews")))
    gone = ids[20:30]
    table.delete("review_id IN (" + ", ".join(f"'{i}'" for i in gone) + ")")
    table.update(updates={"text": "'great great good'"}, predicate=f"review_id = '{ids[30]}'")
    table.update(updates={"text": "'   '"}, predicate=f"review_id = '{ids[31]}'")
    store.write("reviews", spark.createDataFrame([("fleeting", "good"), (None, "an id-less review")],
                                                 "review_id string, text string"))
    deltalake.DeltaTable(str(store.path("reviews"))).delete("review_id = 'fleeting'")
    run = score_incremental(store, "reviews", bundle)
    assert (run["rows_deleted"], run["rows_scored"], run["rows_updated"], run["rows_failed"]) == (10, 1, 1, 2)
    assert json.loads(run["reasons"]) == {"empty_text": 1, "missing_review_id": 1}  # the id-less row is not lost
    assert run["rows_read"] == run["rows_skipped"] + run["rows_scored"] + run["rows_failed"] + run["rows_deleted"]

    # the predictions are now exactly the bundle's predictions of the source's current texts
    source, predictions = _source(store), _predictions(store)
    assert set(predictions) == set(source) - {ids[31], None} and not set(gone) & set(predictions)
    expected = load_bundle(bundle).predict([source[i] for i in sorted(predictions)], batch_size=64)
    assert [predictions[i][0] for i in sorted(predictions)] == expected["label"].tolist()
    assert [predictions[i][1] for i in sorted(predictions)] == pytest.approx(expected["p_positive"].tolist(), abs=1e-6)

    again = score_incremental(store, "reviews", bundle)  # nothing new: nothing read, nothing committed
    assert (again["path"], again["rows_read"], again["predictions_version"]) == ("cdf", 0, None)
    runs = store.read("score_runs").orderBy("finished_at", "run_id").select("path", "watermark").collect()
    assert [r["path"] for r in runs].count("anti_join") == 1 and len(runs) == 5
    assert store.read("score_quarantine").filter(F.col("review_id") == ids[31]).count() == 1


def test_a_run_killed_after_its_commit_is_not_done_twice(spark, bundle, raw_data, tmp_path):
    """The predictions commit carries (app id, source version); a run killed after it, before its record,
    leaves the predictions right, and the retry finds the transaction and writes nothing."""
    from dl.serve.score import score_app_id, score_incremental
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = _reviews(spark, raw_data, "vader_movie.jsonl").orderBy("review_id")
    store.write("reviews", reviews.limit(100))
    score_incremental(store, "reviews", bundle)
    store.write("reviews", reviews.limit(250).join(reviews.limit(100), "review_id", "left_anti"))
    crashed = subprocess.run([sys.executable, str(Path(__file__).with_name("score_child.py")),
                              str(tmp_path / "tables"), str(bundle), "crash-after-commit"], capture_output=True,
                             text=True, timeout=600)
    assert crashed.returncode == 137 and "CRASHING AFTER COMMIT" in crashed.stdout, crashed.stderr[-2000:]
    app = score_app_id(store, "reviews", json.loads((bundle / "bundle.json").read_text())["model_version"])
    assert store.transaction_version("predictions", app) == store.version("reviews") == 1
    assert store.count("score_runs") == 1  # the killed run wrote no record
    committed = (store.version("predictions"), store.count("predictions"))
    assert committed[1] == 250

    retry = score_incremental(store, "reviews", bundle)
    assert (retry["status"], retry["path"], retry["rows_read"], retry["rows_scored"]) == ("succeeded", "cdf", 0, 0)
    assert (store.version("predictions"), store.count("predictions")) == committed
    assert len(_predictions(store)) == 250


def test_a_source_without_a_change_feed_is_scored_by_anti_join(spark, bundle, raw_data, tmp_path):
    import deltalake
    import pyarrow as pa

    from dl.serve.score import score_incremental
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    rows = [(r["review_id"], r["text"]) for r in _reviews(spark, raw_data, "vader_nyt.jsonl").limit(80).collect()]
    first = pa.table({"review_id": [i for i, _ in rows[:50]], "text": [t for _, t in rows[:50]]})
    deltalake.write_deltalake(str(store.path("reviews")), first)  # another writer's table: no change feed
    assert score_incremental(store, "reviews", bundle)["path"] == "anti_join"
    rest = pa.table({"review_id": [i for i, _ in rows[50:]], "text": [t for _, t in rows[50:]]})
    deltalake.write_deltalake(str(store.path("reviews")), rest, mode="append")
    run = score_incremental(store, "reviews", bundle)  # the feed cannot be read: the whole source, said so
    assert (run["path"], run["rows_read"], run["rows_scored"], run["rows_skipped"]) == ("anti_join", 80, 30, 50)
    assert store.count("predictions") == 80

    on = subprocess.run([str(Path(sys.executable).with_name("lakedl")), "tables", "change-feed", "reviews",
                         "--set", f"paths.tables_dir={store.root}"], capture_output=True, text=True, timeout=120)
    assert on.returncode == 0 and json.loads(on.stdout)["version"] == 2, on.stderr[-2000:]
    deltalake.DeltaTable(str(store.path("reviews"))).delete(f"review_id = '{rows[0][0]}'")
    assert score_incremental(store, "reviews", bundle)["path"] == "anti_join"  # consumed at 1: no feed there yet
    deltalake.DeltaTable(str(store.path("reviews"))).delete(f"review_id = '{rows[1][0]}'")
    run = score_incremental(store, "reviews", bundle)  # from the version the feed was on at
    assert (run["path"], run["rows_read"], run["rows_deleted"]) == ("cdf", 1, 1)
    assert store.count("predictions") == 79  # the anti-join path is insert-only: rows[0]'s prediction stays


def test_a_forced_anti_join_run_leaves_edits_and_deletes_to_the_next_feed_run(spark, bundle, raw_data, tmp_path):
    import deltalake

    from dl.serve.score import score_incremental
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = _reviews(spark, raw_data, "vader_movie.jsonl").orderBy("review_id").limit(60)
    store.write("reviews", reviews)
    assert score_incremental(store, "reviews", bundle)["path"] == "anti_join"  # the first run: consumed at 0
    ids = sorted(_source(store))
    table = deltalake.DeltaTable(str(store.path("reviews")))
    table.update(updates={"text": "'awful awful bad'"}, predicate=f"review_id = '{ids[0]}'")
    table.delete(f"review_id = '{ids[1]}'")
    forced = score_incremental(store, "reviews", bundle, change_feed=False)  # sees neither change
    assert (forced["path"], forced["rows_scored"], forced["rows_deleted"]) == ("anti_join", 0, 0)
    run = score_incremental(store, "reviews", bundle)
    assert (run["path"], run["consumed_from"], run["rows_updated"], run["rows_deleted"]) == ("cdf", 0, 1, 1)
    predictions = _predictions(store)
    assert ids[1] not in predictions and len(predictions) == 59
    assert predictions[ids[0]][0] == bundle_label(bundle, "awful awful bad")


def bundle_label(bundle, text: str) -> str:
    from dl.serve.bundle import load_bundle

    return load_bundle(bundle).predict([text], batch_size=1)["label"].tolist()[0]


def test_the_change_feed_of_a_table_reads_each_kind_of_commit(spark, tmp_path):
    import deltalake

    from etl.core.tables import ChangeFeedUnavailable, TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    schema = "id string, text string"
    store.write("t", spark.createDataFrame([("a", "x"), ("b", "y"), ("c", "z")], schema).coalesce(1))  # v0
    store.write("t", spark.createDataFrame([("d", "w")], schema))  # v1: an append
    store.merge("t", spark.createDataFrame([("d", "w2"), ("e", "v")], schema), keys=["id"])  # v2: copy-on-write
    deltalake.DeltaTable(str(store.path("t"))).update(updates={"text": "'y2'"}, predicate="id = 'b'")  # v3
    deltalake.DeltaTable(str(store.path("t"))).delete("id = 'a'")  # v4

    changes, now = store.read_changes("t", 0)
    got = sorted((r["_commit_version"], r["_change_type"], r["id"], r["text"]) for r in changes.collect())
    assert now == 4 and got == [
        (1, "insert", "d", "w"),
        (2, "delete", "d", "w"), (2, "insert", "d", "w2"), (2, "insert", "e", "v"),
        (3, "update_postimage", "b", "y2"), (3, "update_preimage", "b", "y"),
        (4, "delete", "a", "x")]
    assert store.read_changes("t", 4)[0].count() == 0
    merged = store.merge("t", spark.createDataFrame([("e", "v2")], schema), keys=["id"],
                         delete=spark.createDataFrame([("c",)], "id string"), txn=("app", 7))
    assert (merged.updated, merged.deleted, store.transaction_version("t", "app")) == (1, 1, 7)
    assert sorted(r["id"] for r in store.read("t").collect()) == ["b", "d", "e"]
    again = store.merge("t", spark.createDataFrame([("f", "u")], schema), keys=["id"], txn=("app", 7))
    assert (again.inserted, store.count("t")) == (0, 3)  # that transaction is done: nothing written twice

    log = (store.path("t") / "_delta_log" / f"{2:020d}.json").read_text().splitlines()
    [removed] = [json.loads(line)["remove"]["path"] for line in log if '"remove"' in line]
    (store.path("t") / removed).unlink()  # what VACUUM does to a file no snapshot holds any more (added at 1)
    with pytest.raises(ChangeFeedUnavailable, match="a data file of commit 1 was removed"):
        store.read_changes("t", 0)
    assert store.read_changes("t", 2)[0].filter("_commit_version = 3").count() == 2  # later versions still read
