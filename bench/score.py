"""Batch scoring throughput: the Spark scoring UDF (dl/serve/score.py, local[2], one bundle load per Python
worker) vs bare PyTorch loops calling the same `Bundle.predict` on the same texts — one process, and two
(a multiprocessing.Pool(2), one thread each, as Spark's two Python workers) — at 1x and 10x (and 100x) the
fetched review corpora; plus Spark's peak RSS at each size.

    python bench/score.py --bundle DIR [--scales 1 10] [--repeats 2]     (make bench-score)

The input is written once per scale as JSON lines of distinct texts (every copy of a row a new id and, after the
first, a lightly perturbed text: bench/scale.py's `perturb`), so a batch holds as many distinct texts as real
input does. Every side hands `Bundle.predict` chunks of 10,000 texts (Spark's Arrow batch size, as `lakedl
score` runs) and scores them in slices of 256 sorted by length. Spark reads the files and sinks to the `noop`
format (the cost of scoring, not of a writer); the baselines start from the texts in memory with the bundle
loaded and one warm-up pass. Without --bundle, one is exported from the SST BiLSTM quality run
(bench/quality_sst.py's bilstm_glove_sst2). Writes bench/results/score.json, and the rows `score_vs_single` /
`score_vs_pool2` per scale into bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
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
from scale import generate  # bench/scale.py: distinct copies of the corpora

REPO = Path(__file__).resolve().parents[1]
BATCH, ARROW_BATCH = 256, 10_000


def bare(files: list[str], bundle_dir: str, processes: int, repeats: int) -> tuple[float, int]:
    """A baseline in its own process: texts and bundle loaded before the timer, then ``common.timed_passes``
    over chunks of ARROW_BATCH texts (``processes`` > 1: a Pool forked after the load, one thread each)."""
    import torch

    from dl.serve.bundle import load_bundle

    torch.set_num_threads(1 if processes > 1 else 2)  # one process may use both cores; two get one each
    bundle = load_bundle(bundle_dir)
    texts = [json.loads(line)["text"] or "" for path in files for line in open(path, encoding="utf-8") if line.strip()]
    chunks = [texts[i:i + ARROW_BATCH] for i in range(0, len(texts), ARROW_BATCH)]
    return timed_passes(lambda i: len(bundle.predict(chunks[i], BATCH)), len(chunks), processes, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="100 takes ~1 h on 2 cores")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reviews", default=str(REPO / "data" / "raw" / "reviews"))
    args = parser.parse_args()

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
    files = sorted(Path(args.reviews).glob("vader_*.jsonl"))
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, arrow_max_records_per_batch=ARROW_BATCH))
    model = json.loads((Path(bundle) / "bundle.json").read_text())["config"]["model"]
    commit, results, scale_rows = git_commit(), [], []
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    try:
        for scale in args.scales:
            generate(files, scale, work / f"x{scale}")
            inputs = sorted(str(p) for p in (work / f"x{scale}").glob("*.jsonl"))
            rows = read_json_lines(spark, inputs).select("review_id", "text").repartition(2)
            n = rows.count()
            job = score_frame(rows, bundle, batch_size=BATCH)

            def spark_run():
                job.write.format("noop").mode("overwrite").save()

            with PeakRss() as rss:
                spark_s = median_time(spark_run, args.repeats)
            _, (pool_s, pool_rows), pool_peak = run_in_child(bare, (inputs, bundle, 2, args.repeats), 1)
            _, (single_s, single_rows), single_peak = run_in_child(bare, (inputs, bundle, 1, args.repeats), 1)
            if not pool_rows == single_rows == n:
                raise SystemExit(f"row counts differ: spark {n}, pool(2) {pool_rows}, single {single_rows}")
            result = {"case": f"udf_vs_bare_loop_{scale}x", "scale": scale, "rows": n,
                      "ratio": round(pool_s / spark_s, 3), "ratio_vs_single": round(single_s / spark_s, 3),
                      "baseline": "a bare multiprocessing.Pool(2) (1 thread each) calling the same Bundle.predict on "
                                  "chunks of 10,000 texts held in memory; ratio_vs_single: one process, 2 threads",
                      "rows_per_s": round(n / spark_s), "baseline_rows_per_s": round(pool_rows / pool_s),
                      "baseline_single_rows_per_s": round(single_rows / single_s),
                      "peak_rss_mb": rss.peak_mb, "peak_rss_scope": "driver JVM + Python driver + Python workers",
                      "baseline_peak_rss_mb": pool_peak, "baseline_single_peak_rss_mb": single_peak,
                      "spark": "local[2], iterator pandas UDF, Arrow batches of 10,000, noop sink", "model": model,
                      "git_commit": commit, "command": command_line()}
            results.append(result)
            for name, ratio in (("score_vs_pool2", result["ratio"]), ("score_vs_single", result["ratio_vs_single"])):
                scale_rows.append({"case": name, "scale": scale, "rows": n, "ratio": ratio, "model": model,
                                   "goal_at_100x": 0.9 if name.endswith("pool2") else None,
                                   "baseline": result["baseline"], "git_commit": commit, "command": command_line()})
            print(json.dumps(result), flush=True)
            shutil.rmtree(work / f"x{scale}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(args.scales) > 1:
        lo, hi = results[0], results[-1]
        results.append({"case": "memory_growth", "ratio": round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3),
                        "ratio_lower_is_better": True, "rows": hi["rows"],
                        "baseline": f"Spark peak RSS at {lo['scale']}x vs {hi['scale']}x the rows (flat = 1.0)"})
        print(json.dumps(results[-1]))
    print(f"wrote {write_result('score', command_line(), results)}")
    print(f"wrote {write_merged('scale', scale_rows)}")
    spark.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
