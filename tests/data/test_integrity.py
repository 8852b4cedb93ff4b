"""Data integrity under concurrency and bad input, through the text ETL as users run it: two runs at
once, quoted newlines in CSV, wrong JSON types, file-then-line order for duplicates, quarantined bytes
that every reader can show, failures (a Spark error, a full disk) recorded with one error line, and a
killed run's leftovers removed. Each test states the exact counts."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from etl.core.tables import TableStore
from etl.text.pipeline import EtlRunFailed, run_text_etl
from jobs.configs import load_config

pytestmark = pytest.mark.spark
LAKEDL = str(Path(sys.executable).parent / "lakedl")
REPO = Path(__file__).resolve().parents[2]
LOOPS = range(int(os.environ.get("LAKEDL_STRESS_LOOPS", "1")))  # make stress: 20


def tweets(raw_data: Path, start: int, stop: int) -> list[bytes]:
    return (raw_data / "reviews" / "vader_tweets.jsonl").read_bytes().splitlines()[start:stop]


def overrides(root: Path, *extra: str) -> list[str]:
    """The settings every run here shares: tables and shards under ``root``, small encodings."""
    return [f"paths.tables_dir={root / 'tables'}", f"output.shards_dir={root / 'shards'}", "encode.max_len=32",
            "tokenize.vocab.min_count=1", "validation.max_chars=1000", *extra]


def sets(root: Path, *extra: str) -> list[str]:
    """``overrides`` as ``lakedl`` options, for a run in its own process (one core each)."""
    return [arg for s in overrides(root, "spark.master=local[1]", *extra) for arg in ("--set", s)]


def config(root: Path, src, *extra: str):
    paths = [str(p) for p in src] if isinstance(src, list) else [str(src)]
    return load_config("etl_text", overrides=[f"input.paths={json.dumps(paths)}", *overrides(root, *extra)])


def shard_ids(root: Path, name: str = "reviews") -> list[str]:
    return [i for split in ("train", "dev", "test")
            for f in sorted((root / "shards" / name / split).glob("*.parquet"))
            for i in pq.read_table(f, columns=["review_id"]).column("review_id").to_pylist()]


@pytest.mark.parametrize("loop", LOOPS)
def test_two_concurrent_etl_runs_insert_every_new_review_once(spark, raw_data, tmp_path, loop):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_bytes(b"\n".join(tweets(raw_data, 0, 600)) + b"\n")
    first = subprocess.run([LAKEDL, "etl", "text", "--input", str(src), *sets(tmp_path)], capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["rows_kept"] == 600
    (src / "b.jsonl").write_bytes(b"\n".join(tweets(raw_data, 600, 900)) + b"\n")
    procs = [subprocess.Popen([LAKEDL, "etl", "text", "--input", str(src), *sets(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    # each run's report is true: 900 read, and between them the 300 new rows were inserted exactly once
    assert [r["rows_read"] for r in reports] == [900, 900]
    assert sum(r["rows_kept"] for r in reports) == 300
    assert all(r["rows_kept"] + r["rows_already_present"] == 900 and r["rows_quarantined"] == 0 for r in reports)
    store = TableStore(tmp_path / "tables", spark)
    ids = store.read_arrow("silver_reviews", columns=["review_id"]).column("review_id").to_pylist()
    assert len(ids) == len(set(ids)) == 900
    assert sorted(shard_ids(tmp_path)) == sorted(ids)
    manifest = json.loads((tmp_path / "shards" / "reviews" / "manifest.json").read_text())
    assert manifest["silver_version"] == store.version("silver_reviews") and sum(manifest["rows_per_split"].values()) == 900
    again = run_text_etl(config(tmp_path, src), spark, "after")
    assert (again.rows_read, again.rows_kept, again.rows_already_present) == (900, 0, 900)


def test_two_concurrent_first_runs_build_one_tokenizer_and_insert_each_review_once(spark, raw_data, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(tweets(raw_data, 0, 300)) + b"\n")
    procs = [subprocess.Popen([LAKEDL, "etl", "text", "--input", str(src), *sets(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert sum(r["rows_kept"] for r in reports) == 300 and {r["tokenizer_sha256"] for r in reports} == \
        {reports[0]["tokenizer_sha256"]}
    silver = TableStore(tmp_path / "tables", spark).read_arrow("silver_reviews", columns=["review_id", "tokenizer_sha256"])
    assert silver.num_rows == len(set(silver.column("review_id").to_pylist())) == 300
    assert set(silver.column("tokenizer_sha256").to_pylist()) == {reports[0]["tokenizer_sha256"]}
    assert sorted(shard_ids(tmp_path)) == sorted(silver.column("review_id").to_pylist())


def test_csv_fields_with_quoted_newlines_are_one_record_each(spark, raw_data, tmp_path):
    rows = [json.loads(line) for line in tweets(raw_data, 0, 200)]
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "body", "rating"])
        for i, r in enumerate(rows):  # every 5th text spans three lines, as exported spreadsheets do
            text = f"{r['text']}\nsecond line, \"quoted\"\nthird" if i % 5 == 0 else r["text"]
            writer.writerow([r["review_id"], text, 4])
    cfg = config(tmp_path, path, "input.format=csv", 'input.csv.columns={"review_id": "id", "text": "body", '
                 '"stars": "rating"}', "validation.max_quarantine_rate=0")
    report = run_text_etl(cfg, spark, "csv")
    assert (report.rows_read, report.rows_kept, report.rows_quarantined) == (200, 200, 0)
    silver = {r["review_id"]: r["text"] for r in TableStore(tmp_path / "tables", spark).read("silver_reviews").collect()}
    assert silver[rows[0]["review_id"]] == f"{rows[0]['text']}\nsecond line, \"quoted\"\nthird"
    # the old line-by-line reading is still there, and splits such records (40 texts → 40 extra broken rows)
    lines = run_text_etl(config(tmp_path / "lines", path, "input.format=csv", "input.csv.multiline=false",
                                'input.csv.columns={"review_id": "id", "text": "body", "stars": "rating"}',
                                "validation.max_quarantine_rate=1"), spark, "csv-lines")
    assert lines.rows_read == 280


def test_review_id_and_text_that_are_not_json_strings_are_wrong_type(spark, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        '{"review_id": {"nested": 1}, "text": "an object as id"}',
        '{"review_id": 12345, "text": "a number as id"}',
        '{"review_id": "t1", "text": 42}',
        '{"review_id": "t2", "text": ["a", "list"]}',
        '{"review_id": "t3", "text": true}',
        '{"review_id": "ok", "text": "a string as both"}',
        '{"review_id": "-777", "text": "{a string that looks like an object}"}',  # strings that look like others
        '{"review_id": "n1", "text": null}',
    ]) + "\n")
    report = run_text_etl(config(tmp_path, src, "validation.max_quarantine_rate=1"), spark, "types")
    assert report.reasons == {"wrong_type_review_id": 2, "wrong_type_text": 3, "missing_text": 1}
    assert (report.rows_read, report.rows_kept) == (8, 2)


def test_the_first_seen_duplicate_is_the_first_in_file_then_line_order(spark, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    # raw lines that sort the other way round from where they stand, across and within files
    (src / "a.jsonl").write_text('{"review_id": "x", "text": "zz x from file a, line 1"}\n'
                                 '{"review_id": "y", "text": "zz y from file a, line 2"}\n'
                                 '{"review_id": "y", "text": "aa y from file a, line 3"}\n')
    (src / "b.jsonl").write_text('{"review_id": "x", "text": "aa x from file b, line 1"}\n')
    report = run_text_etl(config(tmp_path, src, "validation.max_quarantine_rate=1"), spark, "order")
    assert report.reasons == {"duplicate_review_id": 2} and report.rows_kept == 2
    silver = {r["review_id"]: r["text"] for r in TableStore(tmp_path / "tables", spark).read("silver_reviews").collect()}
    assert silver == {"x": "zz x from file a, line 1", "y": "zz y from file a, line 2"}


def test_quarantined_bytes_that_are_not_utf8_are_readable_everywhere_and_recoverable(spark, raw_data, tmp_path):
    bad = [b'{"review_id": "u1", "text": "caf\xe9 \xff bytes"}', b"\x00\x01\xfe binary \x80 junk"]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(tweets(raw_data, 0, 98) + bad) + b"\n")
    report = run_text_etl(config(tmp_path, src), spark, "bytes")
    assert report.reasons == {"invalid_utf8": 1, "malformed_json": 1} and report.rows_kept == 98
    store = TableStore(tmp_path / "tables", spark)
    frame = store.read_arrow("quarantine_reviews").to_pandas()  # pyarrow → pandas: no UnicodeDecodeError
    assert sorted(bytes(b) for b in frame["raw_bytes"]) == sorted(bad)  # the exact bytes, recoverable
    assert all("\ufffd" in r for r in frame["raw"])
    assert store.read("quarantine_reviews").count() == 2  # Spark
    out = subprocess.run([LAKEDL, "tables", "show", "quarantine_reviews", "--set",
                          f"paths.tables_dir={tmp_path / 'tables'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    shown = json.loads(out.stdout)
    assert shown["rows"] == 2 and {r["reason"] for r in shown["head"]} == {"invalid_utf8", "malformed_json"}


def test_a_run_that_fails_in_spark_is_recorded_and_says_one_error_line(spark, raw_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_bytes(b"\n".join(tweets(raw_data, 0, 100)) + b"\n")
    run_text_etl(config(tmp_path, src), spark, "ok")
    (src / "b.jsonl").write_bytes(b"\n".join(tweets(raw_data, 100, 150)) + b"\n")
    silver = tmp_path / "tables" / "silver_reviews"
    for f in silver.glob("*.parquet"):  # a damaged table: its data file is no longer Parquet
        f.write_bytes(b"not parquet any more")
    out = subprocess.run([LAKEDL, "etl", "text", "--input", str(src), *sets(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr and "Py4J" not in out.stderr
    assert "failed" in errors[0] and "recorded in etl_runs" in errors[0] and len(errors[0]) < 700
    runs = TableStore(tmp_path / "tables", spark).read_arrow("etl_runs").to_pylist()
    assert sorted(r["status"] for r in runs) == ["failed", "succeeded"]
    [failed] = [r for r in runs if r["status"] == "failed"]
    assert "not a Parquet file" in failed["error"] and failed["error"] in errors[0]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), so a write really fails with 'No space left on device'."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root with CAP_SYS_ADMIN (CI has it): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_run_with_one_line_and_a_failed_row(spark, raw_data, tmp_path, tiny_disk):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(tweets(raw_data, 0, 300)) + b"\n")
    (tiny_disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 64 * 1024))  # ~64 KiB left for the shards
    with pytest.raises(EtlRunFailed, match=r"(?i)failed: .*no space left on device.*recorded in etl_runs") as info:
        run_text_etl(config(tmp_path, src, f"output.shards_dir={tiny_disk}"), spark, "full")
    assert "\n" not in str(info.value)
    [row] = TableStore(tmp_path / "tables", spark).read_arrow("etl_runs").to_pylist()
    assert row["status"] == "failed" and "No space left on device" in row["error"]
    (tiny_disk / "filler").unlink()  # space again: the next run brings the shards up to silver
    again = run_text_etl(config(tmp_path, src, f"output.shards_dir={tiny_disk}"), spark, "after")
    assert (again.rows_kept, again.rows_already_present) == (0, 300) and sum(again.rows_per_split.values()) == 300
    assert sum(pq.read_metadata(f).num_rows for f in (tiny_disk / "reviews").glob("*/*.parquet")) == 300
    assert not list((tiny_disk / "reviews").glob(".*staging*"))


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(spark, raw_data, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(tweets(raw_data, 0, 100)) + b"\n")
    cfg = config(tmp_path, src)
    run_text_etl(cfg, spark, "one")
    dataset = tmp_path / "shards" / "reviews"
    leftovers = [dataset / ".dev.staging-0badc0de", dataset / ".train.old-0badc0de"]
    for d in leftovers:
        d.mkdir()
        (d / "part-0.parquet").write_bytes(b"half")
    # a writer's staging folder on this host whose process is gone (pid_max is 4194304: no such process here)
    table_staging = tmp_path / "tables" / "silver_reviews" / "_staging" / f"{socket.gethostname()}-4194303-0badc0de"
    table_staging.mkdir(parents=True)
    (src.parent / "more.jsonl").write_bytes(b"\n".join(tweets(raw_data, 100, 110)) + b"\n")
    again = run_text_etl(config(tmp_path, [src, src.parent / "more.jsonl"]), spark, "two")
    assert again.rows_kept == 10
    assert not any(d.exists() for d in leftovers) and not table_staging.exists()
