"""Inference bundles and the Spark scoring UDF: export from a trained run, load without pickle, refuse
a tampered bundle, and score real review snippets on a real SparkSession exactly as in-process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dl.serve.bundle import BundleError, export_bundle, load_bundle


def test_bundle_round_trip(bundle):
    from conftest import WORDS

    loaded = load_bundle(bundle)
    assert loaded.meta["config"]["model"] == "rnn" and loaded.version.startswith("b-")
    texts = ["GOOD w1 w2", "w3 awful w4", "", "great " * 500]  # upper case, empty, longer than max_len
    scored = loaded.predict(texts, batch_size=3)
    assert list(scored.columns) == ["label", "p_negative", "p_positive", "model_version"]
    assert scored["label"].tolist()[:2] == ["positive", "negative"]  # the toy task's cue words
    np.testing.assert_allclose(scored[["p_negative", "p_positive"]].sum(1), 1.0, rtol=1e-6)
    ids, lengths = loaded.encode(["good w1 w2"])
    assert [WORDS[i] for i in ids[0]] == ["good", "w1", "w2"] and lengths.tolist() == [3]
    state = torch.load(Path(loaded.meta["source_run"]) / "best.pt", weights_only=True)
    for name, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, state["model"][name])


def test_a_text_scores_the_same_alone_as_among_longer_and_shorter_ones(bundle):
    """Texts are scored in batches sorted by length: the results come back in input order, each the same as
    when the text is scored by itself."""
    loaded = load_bundle(bundle)
    texts = [" ".join(["good", "w1", "awful", "w2"][: 1 + i % 4] * (1 + i % 7)) for i in range(40)] + [""]
    together = loaded.predict(texts, batch_size=8)
    alone = [loaded.predict([t], batch_size=1).iloc[0] for t in texts]
    np.testing.assert_allclose(together["p_positive"], [a["p_positive"] for a in alone], atol=1e-6)
    assert together["label"].tolist() == [a["label"] for a in alone]


def test_an_int8_bundle_quantizes_its_layers_and_is_a_model_version_of_its_own(bundle, tmp_path):
    run = Path(json.loads((bundle / "bundle.json").read_text())["source_run"])
    int8 = load_bundle(export_bundle(run, tmp_path / "int8", quantize="int8"))
    full = load_bundle(bundle)
    assert int8.version == full.version + "-int8" and int8.meta["quantize"] == "int8"
    kinds = {type(m).__module__ for m in int8.model.modules()}
    assert {"torch.ao.nn.quantized.dynamic.modules.rnn", "torch.ao.nn.quantized.dynamic.modules.linear"} <= kinds
    texts = ["GOOD w1 w2", "w3 awful w4", "good good w5", "awful w6 w7 w8"] * 5
    assert int8.predict(texts)["label"].tolist() == full.predict(texts)["label"].tolist()
    with pytest.raises(BundleError, match="quantize='int4'"):
        export_bundle(run, tmp_path / "int4", quantize="int4")


def test_tampered_bundles_are_refused(bundle, tmp_path):
    broken = shutil.copytree(bundle, tmp_path / "w")
    data = bytearray((broken / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match bundle.json"):
        load_bundle(broken)
    other = shutil.copytree(bundle, tmp_path / "t")
    doc = json.loads((other / "tokenizer.json").read_text())
    payload = json.dumps(json.loads(doc["payload"])[:-1])  # a different vocabulary, consistently hashed
    import hashlib

    (other / "tokenizer.json").write_text(json.dumps({"kind": "word", "payload": payload,
                                                      "sha256": hashlib.sha256(payload.encode()).hexdigest()}))
    with pytest.raises(BundleError, match="not the one the model was trained with"):
        load_bundle(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="missing bundle.json, weights.safetensors, tokenizer.json"):
        load_bundle(tmp_path / "empty")


def test_a_bundle_json_that_is_not_json_or_lacks_a_key_is_refused(bundle, tmp_path):
    from dl.serve.score import output_schema

    cut = shutil.copytree(bundle, tmp_path / "cut")
    text = (cut / "bundle.json").read_text()
    (cut / "bundle.json").write_text(text[: len(text) // 2])  # truncated, as a full disk or a bad copy leaves it
    for check in (load_bundle, output_schema):
        with pytest.raises(BundleError, match=r"bundle.json: not valid JSON .*re-export the bundle"):
            check(cut)
    lacking = shutil.copytree(bundle, tmp_path / "lacking")
    meta = json.loads(text)
    del meta["label_map"], meta["max_len"]
    (lacking / "bundle.json").write_text(json.dumps(meta))
    for check in (load_bundle, output_schema):
        with pytest.raises(BundleError, match=r"bundle.json: lacks label_map, max_len; re-export"):
            check(lacking)
    (lacking / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="expected a JSON object, found list"):
        load_bundle(lacking)
    wrong = shutil.copytree(bundle, tmp_path / "wrong")
    (wrong / "bundle.json").write_text(json.dumps({**json.loads(text), "config": {"model": "rnn", "hidden": 3}}))
    with pytest.raises(BundleError, match="config does not rebuild the saved model"):
        load_bundle(wrong)


@pytest.mark.spark
def test_spark_udf_scores_like_the_bundle(spark, bundle, raw_data):
    from dl.serve.score import score_frame

    rows = [json.loads(line) for line in (raw_data / "reviews" / "vader_movie.jsonl").read_text().splitlines()[:500]]
    rows += [{"review_id": "empty", "text": ""}, {"review_id": "null", "text": None}]
    df = spark.createDataFrame([(r["review_id"], r["text"]) for r in rows], "review_id string, text string")
    scored = score_frame(df.repartition(3), bundle, batch_size=64).toPandas().set_index("review_id")
    assert len(scored) == len(rows) and scored.index.is_unique  # every row scored, none twice
    ids = [r["review_id"] for r in rows]
    expected = load_bundle(bundle).predict([r["text"] or "" for r in rows])
    np.testing.assert_allclose(scored.loc[ids, "p_positive"].to_numpy(), expected["p_positive"].to_numpy(), atol=1e-5)
    assert scored.loc[ids, "label"].tolist() == expected["label"].tolist()
    assert (scored["model_version"] == expected["model_version"].iloc[0]).all()


@pytest.mark.spark
def test_predict_batch_udf_scores_like_our_udf(spark, bundle, raw_data):
    """pyspark.ml.functions.predict_batch_udf over make_predict_fn gives the scoring UDF's rows."""
    from pyspark.ml.functions import predict_batch_udf

    from dl.serve.score import make_predict_fn, output_schema, score_frame

    df = spark.read.json(str(raw_data / "reviews" / "vader_movie.jsonl")).select("review_id", "text").limit(300)
    df = df.union(spark.createDataFrame([("null", None), ("empty", "")], "review_id string, text string"))
    udf = predict_batch_udf(make_predict_fn(bundle, 64), return_type=output_schema(bundle), batch_size=1000)
    theirs = df.select("review_id", udf("text").alias("p")).select("review_id", "p.*").toPandas().set_index("review_id")
    ours = score_frame(df, bundle, batch_size=64).toPandas().set_index("review_id")
    assert len(theirs) == len(ours) == 302 and list(theirs.columns) == list(ours.columns)
    np.testing.assert_allclose(theirs.loc[ours.index, "p_positive"], ours["p_positive"], atol=1e-6)
    assert theirs.loc[ours.index, "label"].tolist() == ours["label"].tolist()


@pytest.mark.spark
def test_predictions_merge_is_idempotent(spark, bundle, raw_data, tmp_path):
    from dl.serve.score import score_into_table
    from etl.core.tables import TableError, TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    df = spark.read.json(str(raw_data / "reviews" / "vader_movie.jsonl")).select("review_id", "text").limit(300)
    first = score_into_table(store, df, bundle)
    assert first["rows_scored"] == first["inserted"] == 300 == store.count("predictions")
    again = score_into_table(store, df, bundle)  # the same rows, the same model version: nothing new
    assert again["inserted"] == 0 and store.count("predictions") == 300
    columns = set(store.schema("predictions").names)
    assert {"review_id", "label", "p_negative", "p_positive", "model_version", "scored_at"} <= columns
    with pytest.raises(TableError, match="not unique"):
        score_into_table(store, df.unionAll(df.limit(2)), bundle)


def test_cli_exports_and_refuses_before_spark(bundle, tmp_path):
    import subprocess
    import sys

    lakedl = str(Path(sys.executable).parent / "lakedl")
    run = load_bundle(bundle).meta["source_run"]
    out = subprocess.run([lakedl, "bundle", "export", "--run", run, "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "rnn model, version b-" in out.stdout, out.stderr
    assert load_bundle(tmp_path / "b").version == load_bundle(bundle).version  # same weights, same version
    refused = subprocess.run([lakedl, "score", "--bundle", str(tmp_path), "--input", "x.jsonl"],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "not an inference bundle" in refused.stderr


@pytest.mark.spark
def test_incremental_scoring_scores_each_row_once_and_holds_a_lease(spark, bundle, raw_data, tmp_path):
    from dl.serve.score import score_incremental
    from etl.core.lease import Lease, LeaseHeld
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = spark.read.json(str(raw_data / "reviews" / "vader_amazon.jsonl")).select("review_id", "text")
    store.write("reviews", reviews.limit(200))
    first = score_incremental(store, "reviews", bundle)
    assert (first["path"], first["rows_read"], first["rows_scored"], first["rows_skipped"]) == \
        ("anti_join", 200, 200, 0)
    again = score_incremental(store, "reviews", bundle, change_feed=False)  # the whole source, all of it done
    assert (again["rows_scored"], again["rows_skipped"], again["predictions_version"]) == (0, 200, None)
    store.write("reviews", reviews.orderBy("review_id").limit(500).join(reviews.limit(200), "review_id", "left_anti"))
    third = score_incremental(store, "reviews", bundle)  # only the rows new since the last run: the change feed
    assert third["rows_scored"] == third["rows_inserted"] == third["rows_read"] == store.count("reviews") - 200
    assert (third["path"], third["consumed_from"]) == ("cdf", 0)
    assert store.count("predictions") == store.count("reviews")
    history = sorted(store.read_arrow("score_runs").to_pylist(), key=lambda r: r["finished_at"] + r["run_id"])
    assert history[0]["rows_scored"] == 200 and [r["path"] for r in history] == ["anti_join", "anti_join", "cdf"]
    assert sorted(r["watermark"] for r in history) == [0, 0, 1]
    assert {r["status"] for r in history} == {"succeeded"} and {r["rows_failed"] for r in history} == {0}
    stages = json.loads(history[0]["stage_seconds"])
    assert {"read", "anti_join"} <= set(stages) and sum(stages.values()) <= history[0]["seconds"]
    assert {"feed", "changes", "model"} <= set(json.loads(history[2]["stage_seconds"]))
    assert {"driver_python", "jvm"} <= set(json.loads(history[0]["peak_rss_mb"]))

    lease_file = tmp_path / "tables" / "_leases" / "predictions.json"
    with Lease(lease_file, owner="other-scheduler"):  # a concurrent run holds the lease
        before = store.version("predictions")
        with pytest.raises(LeaseHeld, match="other-scheduler"):
            score_incremental(store, "reviews", bundle)
        assert store.version("predictions") == before
    assert not lease_file.exists()
    lease_file.write_text(json.dumps({"owner": "crashed", "host": __import__("socket").gethostname(),
                                      "pid": 2**22 + 7, "expires": 4e9}))  # a dead process on this host
    assert score_incremental(store, "reviews", bundle)["rows_scored"] == 0  # the stale lease is taken over


@pytest.mark.spark
def test_unscoreable_rows_are_quarantined_and_counts_reconcile(spark, bundle, raw_data, tmp_path):
    from dl.serve.score import score_incremental, score_into_table
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    real = [(r["review_id"], r["text"]) for r in map(json.loads, (raw_data / "reviews" / "vader_nyt.jsonl")
                                                      .read_text().splitlines()[:120])]
    long_ok = " ".join(real[0][1] for _ in range(40))[:4_900]  # far beyond max_len tokens: scored on its start
    edge = [(None, "an id-less review"), ("  ", "a blank id"), ("null-text", None), ("empty", ""),
            ("spaces", " \t\n "), ("huge", "great " * 1_000), ("long-ok", long_ok), ("one-word", "awful")]
    source = spark.createDataFrame(real + edge, "review_id string, text string")
    store.write("reviews", source)
    run = score_incremental(store, "reviews", bundle, max_chars=5_000)
    assert json.loads(run["reasons"]) == {"empty_text": 2, "missing_review_id": 2, "missing_text": 1,
                                          "text_too_long": 1}
    assert (run["rows_read"], run["rows_scored"], run["rows_failed"], run["rows_skipped"]) == (128, 122, 6, 0)
    assert run["rows_read"] == store.count("predictions") + store.count("score_quarantine")  # nothing lost
    quarantined = store.read_arrow("score_quarantine").to_pylist()
    assert {(r["review_id"], r["reason"]) for r in quarantined} == {
        (None, "missing_review_id"), ("  ", "missing_review_id"), ("null-text", "missing_text"),
        ("empty", "empty_text"), ("spaces", "empty_text"), ("huge", "text_too_long")}
    assert next(r["text"] for r in quarantined if r["review_id"] == "huge") == "great " * 1_000  # kept whole
    scored = {r["review_id"] for r in store.read_arrow("predictions").to_pylist()}
    assert {"long-ok", "one-word"} <= scored and len(scored) == 122
    # the whole source again: refused rows are not refused anew
    again = score_incremental(store, "reviews", bundle, max_chars=5_000, change_feed=False)
    assert (again["rows_read"], again["rows_skipped"], again["rows_scored"], again["rows_failed"]) == (128, 128, 0, 0)
    assert store.count("score_quarantine") == 6
    # the same rules on the file path (score_into_table), into other tables
    report = score_into_table(store, source, bundle, "predictions_files", quarantine="quarantine_files", max_chars=5_000)
    assert (report["rows_read"], report["rows_scored"], report["rows_quarantined"]) == (128, 122, 6)


@pytest.mark.spark
def test_a_run_killed_mid_commit_changes_nothing_and_the_next_run_completes(spark, bundle, raw_data, tmp_path):
    import subprocess
    import sys

    from dl.serve.score import score_incremental
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = spark.read.json(str(raw_data / "reviews" / "vader_movie.jsonl")).select("review_id", "text")
    store.write("reviews", reviews.limit(100))
    score_incremental(store, "reviews", bundle)
    store.write("reviews", reviews.orderBy("review_id").limit(300).join(reviews.limit(100), "review_id", "left_anti"))
    before = (store.version("predictions"), store.count("predictions"), store.count("score_runs"))
    crashed = subprocess.run([sys.executable, str(Path(__file__).with_name("score_child.py")),
                              str(tmp_path / "tables"), str(bundle), "crash"], capture_output=True, text=True,
                             timeout=600)
    assert crashed.returncode == 137 and "CRASHING AT COMMIT" in crashed.stdout, crashed.stderr[-2000:]
    # the killed run's Parquet files are in the table directory, but no commit references them
    assert (store.version("predictions"), store.count("predictions"), store.count("score_runs")) == before
    lease = json.loads((tmp_path / "tables" / "_leases" / "predictions.json").read_text())
    assert lease["pid"] != __import__("os").getpid()  # left behind by the dead process
    after = score_incremental(store, "reviews", bundle)  # takes over the stale lease, scores the killed run's rows
    assert after["status"] == "succeeded" and after["rows_scored"] == store.count("reviews") - 100
    ids = [r["review_id"] for r in store.read_arrow("predictions", columns=["review_id"]).to_pylist()]
    assert len(ids) == len(set(ids)) == store.count("reviews")
    assert not (tmp_path / "tables" / "_leases" / "predictions.json").exists()


@pytest.mark.spark
def test_a_failing_run_is_recorded_as_failed(spark, bundle, tmp_path):
    from dl.serve.score import score_incremental
    from etl.core.tables import TableError, TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    store.write("reviews", spark.createDataFrame([("a", "fine"), ("a", "twice")], "review_id string, text string"))
    with pytest.raises(TableError, match="not unique"):
        score_incremental(store, "reviews", bundle)
    [row] = store.read_arrow("score_runs").to_pylist()
    assert row["status"] == "failed" and "not unique" in row["error"] and row["rows_read"] == 2
    assert not store.exists("predictions")


@pytest.mark.spark
def test_two_concurrent_runs_never_duplicate(spark, bundle, raw_data, tmp_path):
    """A second process runs at the same time as this one; whichever way the race goes — one run stops
    at the other's lease, or the runs happen one after the other — every row is scored exactly once."""
    import subprocess
    import sys
    import time

    from dl.serve.score import score_incremental
    from etl.core.lease import LeaseHeld
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    reviews = spark.read.json(str(raw_data / "reviews" / "vader_tweets.jsonl")).select("review_id", "text")
    store.write("reviews", reviews.limit(2000))
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("score_child.py")),
                              str(tmp_path / "tables"), str(bundle), "run"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "STARTED"  # its Spark session is up: it is about to run
    time.sleep(1)
    try:
        mine = score_incremental(store, "reviews", bundle)
    except LeaseHeld:
        mine = None
    out = child.communicate(timeout=600)[0]
    assert child.returncode == 0, out
    theirs = json.loads(out.split("RESULT ", 1)[1]) if "RESULT " in out else None
    assert mine is not None or theirs is not None, out  # at most one of the two stopped at the lease
    ids = [r["review_id"] for r in store.read_arrow("predictions", columns=["review_id"]).to_pylist()]
    assert len(ids) == len(set(ids)) == 2000  # every row once
    scored = [r["rows_scored"] for r in (mine, theirs) if r]
    print("concurrent runs:", "this one stopped at the lease" if mine is None else
          "the other stopped at the lease" if theirs is None else f"one after the other, scored {scored}")
    assert sum(scored) == 2000, (mine, theirs, out)


@pytest.mark.spark
@pytest.mark.parametrize("loop", range(int(os.environ.get("LAKEDL_STRESS_LOOPS", "1"))))  # make stress: 20
def test_two_concurrent_score_input_runs_write_each_prediction_once(spark, bundle, raw_data, tmp_path, loop):
    """`lakedl score --input` takes no lease: two runs over the same file at once both finish, and the
    conflict-safe MERGE leaves one prediction per (review_id, model_version); their records add up."""
    import subprocess
    import sys

    from etl.core.tables import TableStore

    lakedl = str(Path(sys.executable).parent / "lakedl")
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join((raw_data / "reviews" / "vader_movie.jsonl").read_bytes().splitlines()[:300]) + b"\n")
    cmd = [lakedl, "score", "--bundle", str(bundle), "--input", str(src), "--set", f"paths.tables_dir={tmp_path / 't'}",
           "--set", "spark.master=local[1]"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert [r["rows_scored"] for r in reports] == [300, 300] and sum(r["inserted"] for r in reports) == 300
    store = TableStore(tmp_path / "t", spark=spark, backend="delta-rs")
    keys = [(r["review_id"], r["model_version"]) for r in store.read_arrow("predictions").to_pylist()]
    assert len(keys) == len(set(keys)) == 300
    runs = store.read_arrow("score_runs").to_pylist()
    assert sorted(r["run_id"] for r in runs) == sorted(r["run_id"] for r in reports)
    assert all(r["status"] == "succeeded" and r["source"] == str(src) for r in runs)
    assert sum(r["rows_inserted"] for r in runs) == 300


def test_a_bad_table_name_is_refused_before_anything_is_written(bundle, raw_data, tmp_path):
    import subprocess
    import sys

    lakedl = str(Path(sys.executable).parent / "lakedl")
    src = tmp_path / "in.jsonl"
    src.write_text('{"review_id": "a", "text": ""}\n{"review_id": "b", "text": "fine"}\n')  # one to quarantine
    out = subprocess.run([lakedl, "score", "--bundle", str(bundle), "--input", str(src), "--table", "bad-name",
                          "--set", f"paths.tables_dir={tmp_path / 't'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "table name 'bad-name' is not valid" in out.stderr
    assert not (tmp_path / "t").exists()  # not even the quarantine table


@pytest.mark.spark
def test_score_explain_adds_each_rows_top_tokens_and_later_plain_runs_leave_them_null(spark, bundle, raw_data, tmp_path):
    from dl.serve.explain import explain
    from dl.serve.score import score_files
    from etl.core.tables import TableStore

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    df = spark.read.json(str(raw_data / "reviews" / "vader_movie.jsonl")).select("review_id", "text")
    first = df.orderBy("review_id").limit(30)
    report = score_files(store, first, bundle, "movie", explain=3)
    assert report["rows_scored"] == 30
    rows = {r["review_id"]: r for r in store.read("predictions").toPandas().to_dict("records")}
    loaded = load_bundle(bundle)
    texts = {r["review_id"]: r["text"] for r in first.collect()}
    for review_id, row in rows.items():
        top = json.loads(row["top_tokens"])
        assert 1 <= len(top) <= 3 and all(value > 0 for _, value in top)
        assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    some = sorted(rows)[:3]  # the column is what `lakedl explain` finds for the row (a coarser integral)
    for review_id, e in zip(some, explain(loaded, [texts[i] for i in some], steps=32, max_steps=256), strict=True):
        assert json.loads(rows[review_id]["top_tokens"]) == [[t, round(a, 4)] for t, a in e.top(3)]
    plain = score_files(store, df.orderBy("review_id").limit(40), bundle, "movie")  # 10 more, without --explain
    assert plain["inserted"] == 10
    table = store.read("predictions").toPandas()
    assert table["top_tokens"].isna().sum() == 10 and len(table) == 40


def test_score_explain_refuses_an_int8_bundle_before_spark(bundle, tmp_path):
    import subprocess
    import sys

    int8 = export_bundle(load_bundle(bundle).meta["source_run"], tmp_path / "int8", quantize="int8")
    refused = subprocess.run([str(Path(sys.executable).parent / "lakedl"), "score", "--bundle", str(int8), "--input",
                              "x.jsonl", "--explain", "3"], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "int8 bundle" in refused.stderr and "Traceback" not in refused.stderr
