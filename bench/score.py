"""Batch scoring throughput: the Spark scoring UDF (dl/serve/score.py, local[2], one bundle load per Python
worker) vs a bare single-process PyTorch loop calling the same `Bundle.predict` on the same texts, at 1x
and 10x the fetched review corpora; plus Spark's peak RSS at both sizes.

    python bench/score.py --bundle DIR [--scales 1 10] [--repeats 2]     (make bench-score)

Both sides score in batches of 256 texts; Spark sinks to the `noop` format (the cost of scoring, not of
a writer) and 10x replicates every row 10 times on both sides. Without --bundle, one is exported from
the SST BiLSTM quality run (bench/quality_sst.py's bilstm_glove_sst2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import PeakRss, command_line, median_time, run_in_child, write_result  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]
BATCH = 256


def bare_loop(files: list[str], scale: int, bundle_dir: str, threads: int) -> int:
    import torch

    from dl.serve.bundle import load_bundle

    torch.set_num_threads(threads)  # 1: as one Spark Python worker has one core; 2: the whole machine
    bundle = load_bundle(bundle_dir)
    texts = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] or "" for line in fh if line.strip()]
    rows = 0
    for _ in range(scale):
        for start in range(0, len(texts), BATCH):
            rows += len(bundle.predict(texts[start:start + BATCH], BATCH))
    return rows


def run_bare(files, scale, bundle_dir, repeats, threads) -> tuple[float, int, float]:
    return run_in_child(bare_loop, (files, scale, bundle_dir, threads), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reviews", default=str(REPO / "data" / "raw" / "reviews"))
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from dl.serve.bundle import export_bundle
    from dl.serve.score import score_frame
    from etl.core.config import SparkSettings
    from etl.core.spark import get_spark
    from etl.sources.readers import read_json_lines

    bundle = args.bundle
    if bundle is None:
        run = REPO / "data" / "work" / "quality_sst" / "runs" / "train" / "bilstm_glove_sst2"
        if not (run / "best.pt").is_file():
            sys.exit(f"no --bundle and no {run}/best.pt: run `make quality QUALITY_ROWS=bilstm_glove_sst2` or pass --bundle")
        bundle = str(export_bundle(run, REPO / "data" / "work" / "bench_score" / "bundle"))
    files = sorted(str(p) for p in Path(args.reviews).glob("vader_*.jsonl"))
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, arrow_max_records_per_batch=BATCH))
    base = read_json_lines(spark, files).select("review_id", "text").repartition(2).cache()
    n_base = base.count()
    results = []
    for scale in args.scales:
        rows = base.withColumn("_copy", F.explode(F.sequence(F.lit(1), F.lit(scale)))) if scale > 1 else base
        job = score_frame(rows.withColumn("review_id", F.concat_ws("#", "review_id", F.lit(scale))), bundle,
                          batch_size=BATCH)

        def spark_run():
            job.write.format("noop").mode("overwrite").save()

        with PeakRss() as rss:
            spark_s = median_time(spark_run, args.repeats)
        bare_s, bare_rows, bare_peak = run_bare(files, scale, bundle, args.repeats, 2)
        bare1_s, bare1_rows, _ = run_bare(files, scale, bundle, args.repeats, 1)
        if bare_rows != n_base * scale or bare1_rows != n_base * scale:
            raise SystemExit(f"row counts differ: spark {n_base * scale}, bare {bare_rows} / {bare1_rows}")
        result = {"case": f"udf_vs_bare_loop_{scale}x", "scale": scale, "rows": n_base * scale,
                  "ratio": round(bare_s / spark_s, 3),
                  "baseline": "bare single-process PyTorch loop (2 threads: both cores) calling the same Bundle.predict",
                  "ratio_vs_1_thread": round(bare1_s / spark_s, 3),
                  "rows_per_s": round(n_base * scale / spark_s), "baseline_rows_per_s": round(bare_rows / bare_s),
                  "baseline_1_thread_rows_per_s": round(bare1_rows / bare1_s),
                  "peak_rss_mb": rss.peak_mb, "peak_rss_scope": "driver JVM + Python driver + Python workers",
                  "baseline_peak_rss_mb": bare_peak, "spark": "local[2], iterator pandas UDF, noop sink",
                  "model": json.loads((Path(bundle) / "bundle.json").read_text())["config"]["model"]}
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(args.scales) > 1:
        lo, hi = results[0], results[-1]
        results.append({"case": "memory_growth", "ratio": round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3),
                        "ratio_lower_is_better": True, "rows": hi["rows"],
                        "baseline": f"Spark peak RSS at {lo['scale']}x vs {hi['scale']}x the rows (flat = 1.0)"})
        print(json.dumps(results[-1]))
    print(f"wrote {write_result('score', command_line(), results)}")
    spark.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
