"""Change-data-feed scoring against the anti-join path, for the same 1% change of a large source.

    python bench/score_cdf.py [--scale 100] [--repeats 3] [--bundle runs/bundles/demo]      (make bench-score-cdf)

The source is the fetched VADER review corpora ``--scale`` times (every copy of a row gets its own id), written
as Delta table ``reviews`` through the table store; one real ``score_incremental`` run scores all of it with the
demo's BiLSTM bundle (that run is the anti-join path and records the source version it scored in the predictions
commit). Then 1% more rows (new ids: part of one more copy of the corpora) are appended in one commit, and that
state is copied aside. Each timed run starts from a fresh copy of it and brings the
predictions up to date: ``cdf`` reads the source's change feed since the version scored (the one appended
file), ``anti_join`` (``change_feed=False``) reads the whole source and the whole predictions table and keeps
the rows not scored yet. Both score the same new rows with the same model and MERGE them the same way; both
run in this process's SparkSession (``local[2]``, as the product's default) after one untimed warm-up run each.
Writes row ``cdf_vs_antijoin`` (``ratio`` = anti-join seconds / CDF seconds, medians) into
bench/results/score_cdf.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import git_commit, write_merged  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=REPO / "runs" / "bundles" / "demo")
    parser.add_argument("--reviews", type=Path, default=REPO / "data" / "raw" / "reviews")
    parser.add_argument("--work", type=Path, default=None, help="keep the tables here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not (args.bundle / "bundle.json").is_file():
        raise SystemExit(f"error: no bundle at {args.bundle}: run `make demo` first (it exports runs/bundles/demo)")

    sys.path.insert(0, str(REPO))
    from pyspark.sql import functions as F

    from dl.serve.score import loaded_bundle, score_incremental
    from etl.core.config import SparkSettings
    from etl.core.spark import get_spark
    from etl.core.tables import TableStore

    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=8, driver_memory="2g"))
    work = args.work or Path(tempfile.mkdtemp(prefix="score-cdf-"))
    base, runs = work / "base", work / "run"
    shutil.rmtree(work, ignore_errors=True)
    corpus = (spark.read.json(str(args.reviews / "*.jsonl")).select("review_id", "text")
              .filter(F.col("review_id").isNotNull()))
    corpus_rows = corpus.count()

    def copies(first: int, last: int):
        n = spark.range(first, last).withColumnRenamed("id", "copy")
        return corpus.crossJoin(n).select(F.concat_ws("~", "review_id", F.col("copy").cast("string"))
                                          .alias("review_id"), "text")

    store = TableStore(base, spark=spark, backend="delta-rs")
    t0 = time.perf_counter()
    store.write("reviews", copies(0, args.scale).repartition(16))
    rows = store.count("reviews")
    loaded_bundle(args.bundle)
    first = score_incremental(store, "reviews", args.bundle)
    print(f"source {rows} rows scored in {time.perf_counter() - t0:.0f} s ({first['path']})", flush=True)
    store.write("reviews", copies(args.scale, args.scale + 1).limit(rows // 100).coalesce(1))
    change = store.count("reviews") - rows

    def run(change_feed: bool) -> tuple[float, dict]:
        shutil.rmtree(runs, ignore_errors=True)
        shutil.copytree(base, runs)
        started = time.perf_counter()
        record = score_incremental(TableStore(runs, spark=spark, backend="delta-rs"), "reviews", args.bundle,
                                   change_feed=change_feed)
        seconds = time.perf_counter() - started
        expected = ("cdf" if change_feed else "anti_join", change)
        if (record["path"], record["rows_scored"]) != expected:
            raise SystemExit(f"error: {record['path']} run scored {record['rows_scored']}, expected {expected}")
        return seconds, record

    times: dict[str, list[float]] = {"cdf": [], "anti_join": []}
    stages: dict[str, dict] = {}
    for side in times:  # warm-up: each side once, untimed
        run(side == "cdf")
    for i in range(args.repeats):
        for side in times:
            seconds, record = run(side == "cdf")
            times[side].append(round(seconds, 2))
            stages[side] = record["stage_seconds"]
            print(f"repeat {i + 1} {side}: {seconds:.1f} s", flush=True)
    cdf, anti = statistics.median(times["cdf"]), statistics.median(times["anti_join"])
    row = {"case": "cdf_vs_antijoin", "scale": args.scale, "source_rows": rows, "changed_rows": change,
           "corpus_rows": corpus_rows, "ratio": round(anti / cdf, 2), "cdf_seconds": times["cdf"],
           "anti_join_seconds": times["anti_join"], "cdf_rows_per_s": round(change / cdf, 1),
           "anti_join_rows_per_s": round(change / anti, 1), "stage_seconds": stages, "goal": ">= 5",
           "git_commit": git_commit(), "spark": "local[2], driver 2g", "bundle": str(args.bundle.name)}
    print(f"cdf {cdf:.1f} s, anti-join {anti:.1f} s: {anti / cdf:.2f}x", flush=True)
    print(write_merged("score_cdf", [row]))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
