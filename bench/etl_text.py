"""Text ETL throughput: Spark (Arrow pandas UDFs, local[2]) vs the same normalizer + tokenizer in a bare
single-process Python loop over the same rows, at 1x and 10x the fetched corpora; plus peak RSS.

    python bench/etl_text.py [--scales 1 10] [--repeats 3]     (make bench-etl)

Both sides read the same JSON lines and run the same function (etl.text.textprep.encode_batch: normalize,
encode with the same word vocabulary built once up front, pad to max_len) on batches of 10,000 rows. Spark sinks to the `noop` format, so the figure is
the cost of the work, not of a writer. 10x replicates every row 10 times on both sides.
`jvm_read_share` is the time of the same Spark job without the UDF (JSON read + replication in the JVM)
over the full job's: the part of the 2 cores the JVM takes before any Python runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import PeakRss, command_line, median_time, run_in_child, write_result  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]


def bare_loop(files: list[str], scale: int, payload: str, max_len: int, batch: int = 10_000) -> int:
    """The baseline: one Python process running the UDF's own function (normalize + encode + pad) on
    batches of the same size Arrow hands the UDF."""
    from etl.text.textprep import Normalizer, TextTokenizer, encode_batch

    norm, tok = Normalizer(), TextTokenizer("word", payload)
    rows, texts = 0, []
    for _ in range(scale):
        for path in files:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    texts.append(json.loads(line)["text"])
                    if len(texts) == batch:
                        rows += len(encode_batch(texts, norm, tok, max_len, True))
                        texts = []
    if texts:
        rows += len(encode_batch(texts, norm, tok, max_len, True))
    return rows


def run_bare(files, scale, payload, max_len, repeats) -> tuple[float, int, float]:
    """Median seconds, rows and peak RSS of the bare loop, each run in a fresh process (after a warm-up)."""
    return run_in_child(bare_loop, (files, scale, payload, max_len), repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
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

    results = []
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
        bare_s, bare_rows, bare_peak = run_bare(files, scale, tok.payload, args.max_len, args.repeats)
        if bare_rows != spark_rows:
            raise SystemExit(f"row counts differ: spark {spark_rows}, bare {bare_rows}")
        result = {
            "case": f"spark_vs_bare_loop_{scale}x", "scale": scale, "rows": spark_rows,
            "ratio": round(bare_s / spark_s, 3),
            "baseline": "bare single-process Python loop calling the same encode_batch on the same rows",
            "rows_per_s": round(spark_rows / spark_s), "baseline_rows_per_s": round(bare_rows / bare_s),
            "peak_rss_mb": rss.peak_mb, "peak_rss_scope": "driver JVM + Python driver + Python workers",
            "baseline_peak_rss_mb": bare_peak, "jvm_read_share": round(jvm_s / spark_s, 3), "spark": "local[2], Arrow pandas UDFs, noop sink",
        }
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
    spark.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
