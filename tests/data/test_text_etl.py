"""The text ETL end to end on real corpora plus generated bad input: exact reconciliation, quarantine,
incremental runs, determinism, and petastorm reading the shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from etl.core.tables import TableStore
from etl.text.pipeline import QuarantineRateError, ShardsError, run_text_etl
from jobs.configs import load_config

pytestmark = pytest.mark.spark
VALID = 300  # real VADER tweets taken per corpus copy
BAD = {
    "malformed_json": [b'{"review_id": "j1", "text": "truncated'],
    "missing_text": [b'{"review_id": "m1", "stars": 3}'],
    "missing_review_id": [b'{"text": "who wrote this", "stars": 3}'],
    "wrong_type_stars": [b'{"review_id": "w1", "text": "typed", "stars": "five"}'],
    "empty_text": [b'{"review_id": "e1", "text": "   "}',
                   b'{"review_id": "e2", "text": "\\t\\n \\u00a0\\u2003"}'],  # tabs, newline, NBSP, em space
    "text_too_long": [b'{"review_id": "h1", "text": "' + b"a" * 1001 + b'"}'],
    "invalid_utf8": [b'{"review_id": "u1", "text": "caf\xe9 \xff bytes"}'],
    "stars_out_of_range": [b'{"review_id": "r1", "text": "nine stars", "stars": 9}'],
    "label_out_of_range": [b'{"review_id": "r2", "text": "label three", "label": 3}'],
    "duplicate_review_id": [b'{"review_id": "d1", "text": "second copy"}'],
}
KEPT_EDGE = [b'{"review_id": "d1", "text": "first copy", "stars": 4}',   # its file's first line: kept
             b'{"review_id": "ok1", "text": "Fine &amp; dandy https://x.example", "stars": 5, "label": 1}',
             b'', b'   ']                                                       # blank lines are not records


def make_corpus(raw_data: Path, root: Path) -> Path:
    src = root / "in"
    src.mkdir(parents=True)
    lines = (raw_data / "reviews" / "vader_tweets.jsonl").read_bytes().splitlines()[:VALID]
    (src / "tweets.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    edge = KEPT_EDGE[:1] + [line for lines in BAD.values() for line in lines] + KEPT_EDGE[1:]
    (src / "edge.jsonl").write_bytes(b"\n".join(edge) + b"\n")
    return src


def config(root: Path, src: Path, *extra: str):
    return load_config("etl_text", overrides=[
        f"input.paths=[{src}]", f"paths.tables_dir={root / 'tables'}", f"output.shards_dir={root / 'shards'}",
        "validation.max_chars=1000", "validation.max_quarantine_rate=0.1", "encode.max_len=32",
        "tokenize.vocab.min_count=1", "output.rows_per_file=100", *extra])


def shard_rows(root: Path, split: str) -> list[list[dict]]:
    files = sorted((root / "shards" / "reviews" / split).glob("*.parquet"))
    return [pq.read_table(f).to_pylist() for f in files]


@pytest.fixture(scope="module")
def first_run(spark, raw_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("etl")
    src = make_corpus(raw_data, root)
    cfg = config(root, src)
    return root, src, cfg, run_text_etl(cfg, spark, "run-1")


def test_every_bad_input_class_is_quarantined_and_counts_reconcile(first_run):
    _, _, _, report = first_run
    assert report.reasons == {k: len(v) for k, v in BAD.items()}
    assert report.rows_read == VALID + sum(len(v) for v in BAD.values()) + 2
    assert report.rows_kept == VALID + 2
    assert report.rows_read == report.rows_kept + report.rows_quarantined + report.rows_already_present
    assert report.status == "succeeded" and report.rows_already_present == 0
    assert sum(report.rows_per_split.values()) == report.rows_kept


def test_quarantine_table_keeps_raw_record_reason_file_and_run(spark, first_run):
    root, _, _, report = first_run
    rows = TableStore(root / "tables", spark).read("quarantine_reviews").collect()
    assert len(rows) == report.rows_quarantined
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["malformed_json"]["raw"] == '{"review_id": "j1", "text": "truncated'
    assert by_reason["duplicate_review_id"]["raw"] == '{"review_id": "d1", "text": "second copy"}'
    assert "\ufffd" in by_reason["invalid_utf8"]["raw"]
    assert {r["run_id"] for r in rows} == {"run-1"}
    assert all(r["source_file"].endswith("edge.jsonl") for r in rows)


def test_silver_rows_are_normalized_encoded_and_have_masked_targets(spark, first_run):
    root, _, _, report = first_run
    silver = {r["review_id"]: r for r in TableStore(root / "tables", spark).read("silver_reviews").collect()}
    assert len(silver) == report.rows_kept
    ok = silver["ok1"]
    assert ok["text_norm"] == "fine & dandy <url>"
    assert ok["length"] == len(ok["ids"]) == 4 and len(ok["input_ids"]) == 32 and ok["input_ids"][4:] == [0] * 28
    assert (ok["sentiment"], ok["sentiment_mask"], ok["rating"], ok["rating_mask"]) == (1, 1, 4, 1)
    first = silver["d1"]
    assert first["text"] == "first copy" and first["sentiment_mask"] == 0 and first["rating"] == 3
    assert all(r["tokenizer_sha256"] == report.tokenizer_sha256 for r in silver.values())
    assert max(r["length"] for r in silver.values()) <= 32


def test_runs_table_and_manifest(spark, first_run):
    root, _, cfg, report = first_run
    runs = TableStore(root / "tables", spark).read("etl_runs").filter("run_id = 'run-1'").collect()
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert json.loads(runs[0]["reasons"]) == report.reasons
    stages = json.loads(runs[0]["stage_seconds"])  # where the run's time went, and each kind of process's peak
    assert set(stages) == {"read_validate", "quarantine", "vocabulary", "encode_merge", "shards"}
    assert all(v > 0 for v in stages.values()) and sum(stages.values()) <= runs[0]["seconds"]
    peaks = json.loads(runs[0]["peak_rss_mb"])
    assert {"driver_python", "jvm", "python_workers"} <= set(peaks) and peaks["jvm"] > 100
    manifest = json.loads((root / "shards" / "reviews" / "manifest.json").read_text())
    assert manifest["rows_per_split"] == report.rows_per_split
    assert manifest["tokenizer_sha256"] == report.tokenizer_sha256 and manifest["run_id"] == "run-1"
    assert manifest["config"]["encode"]["max_len"] == 32
    for split, files in manifest["files"].items():
        assert sum(pq.read_metadata(root / "shards" / "reviews" / split / f).num_rows for f in files) == \
            report.rows_per_split[split]
        assert all(pq.read_metadata(root / "shards" / "reviews" / split / f).num_rows <= 100 for f in files)


def test_petastorm_reads_the_shards(first_run):
    from petastorm import make_batch_reader

    root, _, _, report = first_run
    url = (root / "shards" / "reviews" / "train").as_uri()
    seen = 0
    with make_batch_reader(url, num_epochs=1, workers_count=1,
                           schema_fields=["review_id", "input_ids", "length", "sentiment", "sentiment_mask"]) as reader:
        for batch in reader:
            assert batch.input_ids.shape[1] == 32
            seen += len(batch.review_id)
    assert seen == report.rows_per_split["train"]


def test_rerun_with_nothing_new_changes_nothing(spark, first_run):
    root, _, cfg, first = first_run
    store = TableStore(root / "tables", spark)
    before = {t: store.version(t) for t in ("silver_reviews", "quarantine_reviews")}
    shards_before = {p: p.stat().st_mtime_ns for p in (root / "shards").rglob("*.parquet")}
    again = run_text_etl(cfg, spark, "run-2")
    assert (again.rows_kept, again.rows_already_present) == (0, first.rows_kept)
    assert again.rows_quarantined == first.rows_quarantined
    assert {t: store.version(t) for t in before} == before
    assert {p: p.stat().st_mtime_ns for p in (root / "shards").rglob("*.parquet")} == shards_before
    assert again.tokenizer_sha256 == first.tokenizer_sha256


def test_new_files_append_only_unseen_reviews(spark, first_run):
    root, src, cfg, first = first_run
    store = TableStore(root / "tables", spark)
    version = store.version("silver_reviews")
    new = [{"review_id": f"new-{i}", "text": f"brand new review number {i}", "stars": 2} for i in range(5)]
    new.append({"review_id": "ok1", "text": "an edited copy of an existing review", "stars": 1})
    (src / "more.jsonl").write_text("\n".join(json.dumps(r) for r in new) + "\n")
    try:
        third = run_text_etl(cfg, spark, "run-3")
    finally:
        (src / "more.jsonl").unlink()
    # the edited ok1 collides with ok1 in edge.jsonl of the same input: quarantined, never overwriting
    assert third.rows_kept == 5 and third.rows_already_present == first.rows_kept
    assert third.rows_quarantined == first.rows_quarantined + 1
    assert third.reasons["duplicate_review_id"] == 2
    assert store.version("silver_reviews") == version + 1
    assert store.count("silver_reviews") == first.rows_kept + 5
    assert store.read("silver_reviews").filter("review_id = 'ok1'").first()["text"].startswith("Fine")
    assert sum(third.rows_per_split.values()) == first.rows_kept + 5
    assert third.tokenizer_sha256 == first.tokenizer_sha256  # the vocabulary is kept: ids stay stable


def test_a_rerun_rewrites_shards_that_lag_behind_silver(spark, raw_data, tmp_path):
    # a run that committed silver and died before its shards left a rerun with "nothing new" to do
    src = make_corpus(raw_data, tmp_path)
    cfg = config(tmp_path, src)
    first = run_text_etl(cfg, spark, "run-1")
    before = {s: shard_rows(tmp_path, s) for s in ("train", "dev", "test")}
    dataset = tmp_path / "shards" / "reviews"
    for split in ("train", "dev", "test"):
        shutil.rmtree(dataset / split)
    (dataset / "manifest.json").unlink()
    again = run_text_etl(cfg, spark, "run-2")
    assert (again.rows_kept, again.rows_already_present) == (0, first.rows_kept)
    assert again.rows_per_split == first.rows_per_split and again.tokenizer_sha256 == first.tokenizer_sha256
    assert {s: shard_rows(tmp_path, s) for s in before} == before
    assert json.loads((dataset / "manifest.json").read_text())["silver_version"] == first.silver_version
    # without the tokenizer the same ids cannot be rebuilt: refused, with what to do
    shutil.rmtree(dataset / "_artifacts")
    with pytest.raises(ShardsError, match=r"tokenizer .* is gone.*drop .*silver_reviews"):
        run_text_etl(cfg, spark, "run-3")
    runs = {r["run_id"]: r for r in TableStore(tmp_path / "tables", spark).read("etl_runs").collect()}
    assert runs["run-3"]["status"] == "failed_tokenizer_missing" and runs["run-3"]["rows_already_present"] == first.rows_kept
    assert runs["run-2"]["status"] == "succeeded"


def test_same_input_gives_same_shards_and_vocab(spark, raw_data, tmp_path):
    reports = []
    for name in ("a", "b"):
        src = make_corpus(raw_data, tmp_path / name)
        reports.append(run_text_etl(config(tmp_path / name, src), spark, f"run-{name}"))
    assert reports[0].tokenizer_sha256 == reports[1].tokenizer_sha256
    assert reports[0].rows_per_split == reports[1].rows_per_split
    for split in ("train", "dev", "test"):
        a, b = shard_rows(tmp_path / "a", split), shard_rows(tmp_path / "b", split)
        assert a and a == b  # same rows, in the same files, in the same order


def test_quarantine_rate_above_threshold_fails_and_adds_nothing(spark, raw_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.jsonl").write_bytes(b"\n".join([b'{"review_id": "a", "text": "ok"}', b"garbage", b"{"]) + b"\n")
    cfg = config(tmp_path, src)
    with pytest.raises(QuarantineRateError, match=r"2 of 3 rows \(66.7%\) were quarantined"):
        run_text_etl(cfg, spark, "run-bad")
    store = TableStore(tmp_path / "tables", spark)
    assert not store.exists("silver_reviews")
    assert store.count("quarantine_reviews") == 2
    run = store.read("etl_runs").first()
    assert run["status"] == "failed_quarantine_rate" and run["rows_read"] == 3


def test_sst_given_split_matches_the_treebank(spark, sst_dir, tmp_path):
    cfg = load_config("etl_text", overrides=[
        f"input.paths=[{sst_dir}]", "input.format=sst", "split.mode=given", "output.name=sst",
        f"paths.tables_dir={tmp_path / 'tables'}", f"output.shards_dir={tmp_path / 'shards'}",
        "validation.max_quarantine_rate=0.1"])
    report = run_text_etl(cfg, spark, "sst-1")
    assert report.rows_read == 9645 + 1101 + 2210
    assert report.reasons == {"held_out_duplicate": 1105}
    assert report.rows_per_split == {"train": 8540, "dev": 1101, "test": 2210}
    test = pq.read_table(sorted((tmp_path / "shards" / "sst" / "test").glob("*.parquet")))
    assert sum(test.column("sentiment_mask").to_pylist()) == 1821  # SST-2 test size
    assert sorted(set(test.column("rating").to_pylist())) == [0, 1, 2, 3, 4]


def test_csv_and_text_label_readers(spark, tmp_path):
    from etl.sources.readers import read_csv, read_text_label
    from etl.text.validate import validate

    csv = tmp_path / "reviews.csv"
    csv.write_text('id,body,rating\nc1,"Great, really",5\nc2,meh,3,EXTRA\nc3,,2\n')
    rows = {r["review_id"] or r["raw"]: r for r in validate(
        read_csv(spark, [str(csv)], {"review_id": "id", "text": "body", "stars": "rating"}, source="shop"),
        1000).collect()}
    assert rows["c1"]["reason"] is None and rows["c1"]["text"] == "Great, really" and rows["c1"]["stars"] == 5.0
    assert rows["c1"]["source"] == "shop"
    assert [r["reason"] for r in rows.values() if "EXTRA" in r["raw"]] == ["malformed_csv"]
    assert rows["c3"]["reason"] == "missing_text"
    with pytest.raises(ValueError, match="unknown fields \\['body'\\]"):
        read_csv(spark, [str(csv)], {"body": "text"})

    tsv = tmp_path / "labelled.txt"
    tsv.write_text("loved it\t1\nhated it\t0\nno label here\nloved it\t1\n")
    got = validate(read_text_label(spark, [str(tsv)], "plain"), 1000).orderBy("raw").collect()
    assert [(r["text"], r["label"], r["reason"]) for r in got] == [
        ("hated it", 0, None), ("loved it", 1, None), ("loved it", 1, "duplicate_review_id"),
        ("no label here", None, None)]


def test_spark_sst_reader_and_the_converter_agree_at_phrase_level(spark, sst_dir, tmp_path):
    from etl.sources.readers import read_sst
    from etl.sources.sst import convert_sst

    report = convert_sst(sst_dir, tmp_path, phrases=True)["sst_train"]
    rows = read_sst(spark, str(sst_dir), phrases=True).filter("split = 'train' AND _malformed IS NULL")
    assert rows.count() == report["sentences"] + report["phrases"]
    assert rows.filter("source = 'sst_phrase'").count() == report["phrases"]


def test_sst_trees_and_vader_json_lines_in_one_dataset(spark, sst_dir, raw_data, tmp_path):
    """conf/recipes/etl/general.yml's shape (sentiment_general's data): SST's trees with their own splits and a JSON
    lines corpus (`input.also`) split by hash, as bench/transfer.py splits each VADER domain, in one dataset.
    VADER's movie snippets hold SST's sentences: no text or sentence of dev or test is left in train, and no text
    is twice in dev/test."""
    from pyspark.sql import functions as F

    from etl.core.splits import hashed_split, split_bucket
    from etl.text.validate import text_key, text_pieces

    movie = raw_data / "reviews" / "vader_movie.jsonl"
    cfg = load_config("etl_text", conf_files=[Path(__file__).parents[2] / "conf/recipes/etl/general.yml"], overrides=[
        f"input.paths=[{sst_dir}]", "input.sst_phrases=false", f"input.also=[{{paths: [{movie}], format: json}}]",
        f"paths.tables_dir={tmp_path / 'tables'}", f"output.shards_dir={tmp_path / 'shards'}",
        "validation.max_quarantine_rate=0.3"])  # sentences only: the shared ones weigh more than among phrases
    report = run_text_etl(cfg, spark, "general-1")
    assert report.rows_read == 9645 + 1101 + 2210 + 10605
    silver = TableStore(tmp_path / "tables", spark).read("silver_general").withColumn("key", text_key("text"))
    sources = dict(silver.groupBy("source").count().collect())
    shared = report.reasons["held_out_duplicate"] - 1105  # SST's own dev trees in train.txt: 1105
    assert 2000 < shared < 10605 and report.rows_kept == 8540 + 1101 + 2210 + 10605 - shared
    assert sources["sst"] + sources["vader_movie"] == report.rows_kept
    held = silver.filter(F.col("split") != "train")
    assert held.select("key").distinct().count() == held.count()  # each held-out text once
    assert silver.filter(F.col("split") == "train").join(held.select("key"), "key").count() == 0
    pieces = silver.select("split", F.explode(text_pieces("text")).alias("piece"))  # snippets holding a sentence
    held_pieces = pieces.filter(F.col("split") != "train").select("piece")
    assert pieces.filter(F.col("split") == "train").join(held_pieces, "piece").count() == 0
    s = cfg.split
    want = (spark.read.json(str(movie)).select("review_id", hashed_split(split_bucket("review_id", s.seed),
                                                                         s.train, s.dev).alias("want")))
    got = silver.filter(F.col("source") == "vader_movie").join(want, "review_id")
    assert got.count() == sources["vader_movie"] and got.filter(F.col("split") != F.col("want")).count() == 0

    with pytest.raises(ValueError, match="input.also reads files"):
        load_config("etl_text", overrides=["input.format=bronze", f"input.also=[{{paths: [{movie}]}}]"])
