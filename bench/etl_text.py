"""Text ETL throughput: Spark (Arrow pandas UDFs, local[2]) vs the same normalizer + tokenizer in bare Python loops
over the same rows — one process, and a multiprocessing.Pool(2) — at 1x, 10x and 100x the fetched corpora; peak RSS.

    python bench/etl_text.py [--scales 1 10 100] [--repeats 3]     (make bench-etl)

Every side runs the same function (etl.text.textprep.encode_batch: normalize, encode with the same word vocabulary
built once up front, pad to max_len) on batches of 10,000 rows. Spark reads the JSON lines and sinks to the `noop`
format, so the figure is the cost of the work, not of a writer. The baselines start from the rows already parsed
into memory, with their imports done and one warm-up pass (which also compiles and loads what each process needs),
each in its own process; the Pool(2) workers get the rows by fork and the batches by index. Nx replicates every
row N times on every side. `jvm_read_share` is the time of the same Spark job without the UDF (JSON read +
replication in the JVM) over the full job's: the part of the 2 cores the JVM takes before any Python runs.
Writes bench/results/etl_text.json, and the rows `etl_text_vs_single` / `etl_text_vs_pool2` per scale into
bench/results/scale.json (keeping its other rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import (  # bench/common.py, beside this script
    PeakRss,
    command_line,
    git_commit,
    median_time,
    run_in_child,
    timed_passes,
    write_merged,
    write_result,
)

REPO = Path(__file__).resolve().parents[1]


def bare(files: list[str], scale: int, payload: str, max_len: int, processes: int, repeats: int,
         batch: int = 10_000) -> tuple[float, int]:
    """A baseline in its own process: the rows parsed into memory and the imports done before the timer, then
    ``common.timed_passes`` over the batches (``processes`` > 1: a Pool forked after the load): median seconds
    and the rows encoded."""
    from etl.text.textprep import Normalizer, TextTokenizer, encode_batch

    texts = [json.loads(line)["text"] for path in files for line in open(path, encoding="utf-8") if line.strip()]
    texts = texts * scale
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    norm, tok = Normalizer(), TextTokenizer("word", payload)
    return timed_passes(lambda i: len(encode_batch(batches[i], norm, tok, max_len, True)), len(batches), processes,
                        repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reviews", default=str(REPO / "data" / "raw" / "reviews"))
    parser.add_argument("--max-len", type=int, default=128)
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from etl.core.config import SparkSettings
    from etl.core.spark import get_spark
    from etl.sources.readers import read_json_lines
    from etl.text.textprep import Normalizer, build_word_vocab, encode_frame, word_tokens_udf

    files = sorted(str(p) for p in Path(args.reviews).glob("*.jsonl"))
    if not files:
        sys.exit(f"no *.jsonl in {args.reviews}: run `make data` (and `lakedl data sst`) first")
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4))
    base = read_json_lines(spark, files).select("review_id", "text")
    normalized = base.withColumn("text_norm", Normalizer().column("text"))
    tok = build_word_vocab(normalized.select(word_tokens_udf("text_norm").alias("tokens")), 2, 30_000)
    n_base = base.count()
    print(f"{n_base} rows in {len(files)} files; vocabulary {tok.vocab_size} ({tok.sha256[:12]})", flush=True)

    commit, results, scale_rows = git_commit(), [], []
    for scale in args.scales:
        rows = base.withColumn("_copy", F.explode(F.sequence(F.lit(1), F.lit(scale)))) if scale > 1 else base
        job = encode_frame(rows, Normalizer(), tok, "text", args.max_len, True)
        spark_rows = n_base * scale

        def spark_run():
            job.write.format("noop").mode("overwrite").save()

        def spark_without_udf():  # the same read + replicate in the JVM, no Python: where Spark's time goes
            rows.write.format("noop").mode("overwrite").save()

        with PeakRss() as rss:
            spark_s = median_time(spark_run, args.repeats)
        jvm_s = median_time(spark_without_udf, args.repeats)
        _, (bare_s, bare_rows), bare_peak = run_in_child(bare, (files, scale, tok.payload, args.max_len, 1,
                                                                 args.repeats), 1)
        _, (pool_s, pool_rows), pool_peak = run_in_child(bare, (files, scale, tok.payload, args.max_len, 2,
                                                                 args.repeats), 1)
        if not bare_rows == pool_rows == spark_rows:
            raise SystemExit(f"row counts differ: spark {spark_rows}, single {bare_rows}, pool(2) {pool_rows}")
        result = {
            "case": f"spark_vs_bare_loop_{scale}x", "scale": scale, "rows": spark_rows,
            "ratio": round(bare_s / spark_s, 3), "ratio_vs_pool2": round(pool_s / spark_s, 3),
            "baseline": "one Python process calling the same encode_batch on the same rows, parsed into memory "
                        "before the timer; ratio_vs_pool2: a multiprocessing.Pool(2) doing the same",
            "rows_per_s": round(spark_rows / spark_s), "baseline_rows_per_s": round(bare_rows / bare_s),
            "pool2_rows_per_s": round(pool_rows / pool_s),
            "peak_rss_mb": rss.peak_mb, "peak_rss_scope": "driver JVM + Python driver + Python workers",
            "baseline_peak_rss_mb": bare_peak, "pool2_peak_rss_mb": pool_peak,
            "jvm_read_share": round(jvm_s / spark_s, 3), "spark": "local[2], Arrow pandas UDFs, noop sink",
            "git_commit": commit, "command": command_line(),
        }
        for name, ratio in (("etl_text_vs_single", result["ratio"]), ("etl_text_vs_pool2", result["ratio_vs_pool2"])):
            scale_rows.append({"case": name, "scale": scale, "rows": spark_rows, "ratio": ratio,
                               "goal_at_100x": 1.7 if name.endswith("single") else 0.9,
                               "baseline": result["baseline"], "git_commit": commit, "command": command_line()})
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(args.scales) > 1:
        lo, hi = results[0], results[-1]
        results.append({"case": "memory_growth", "ratio": round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3),
                        "ratio_lower_is_better": True,
                        "baseline": f"Spark peak RSS at {lo['scale']}x vs {hi['scale']}x the rows (flat = 1.0)",
                        "rows": hi["rows"]})
        print(json.dumps(results[-1]))
    path = write_result("etl_text", command_line(), results)
    print(f"wrote {path}")
    print(f"wrote {write_merged('scale', scale_rows)}")
    spark.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
