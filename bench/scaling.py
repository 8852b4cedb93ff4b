"""Training throughput with 2 processes vs 1, for the torch_distributor and horovod launchers, on the
text ETL's real shards (the demo corpus), same model, data and per-process batch size.

    python bench/scaling.py [--shards data/shards/reviews] [--model bow rnn] [--epochs 3] [--batch 64]   (make bench-scaling)

samples/s = training rows per epoch (all ranks) / seconds of the step loop (evaluation excluded),
the median over epochs after the first (the first warms up). Cases, per BENCH.md:
  <launcher>_2x1_vs_1x1   2 processes × 1 thread  vs the same launcher with 1 process × 1 thread
  <launcher>_2x1_vs_1x2   2 processes × 1 thread  vs 1 process × 2 threads in this process (what a user
                          of this 2-core box would otherwise run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from common import RESULTS, command_line, write_result  # bench/common.py, beside this script

from dl.engine.launch import launch
from dl.engine.loop import WorkerSettings
from dl.engine.optim import OptimSettings
from dl.train.worker import train_worker
from etl.core.config import SparkSettings
from etl.core.spark import get_spark

REPO = Path(__file__).resolve().parents[1]
MODEL_OPTIONS = {"bow": {}, "rnn": {"cell": "lstm", "embed_dim": 128, "hidden": 128, "bidirectional": True},
                 "cnn": {"embed_dim": 128, "filters": 100}, "transformer": {"d_model": 128, "layers": 2}}


def throughput(result: dict) -> tuple[float, int]:
    history = result["history"]
    timed = history[1:] or history
    seconds = statistics.median(h["epoch_seconds"] for h in timed)
    return history[-1]["samples"] / seconds, history[-1]["samples"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=str(REPO / "data" / "shards" / "reviews"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, nargs="+", default=[64])
    ap.add_argument("--model", nargs="+", default=["bow", "rnn"], choices=list(MODEL_OPTIONS))
    ap.add_argument("--launchers", nargs="+", default=["torch_distributor", "horovod"])
    args = ap.parse_args(argv)
    if not (Path(args.shards) / "manifest.json").is_file():
        sys.exit(f"{args.shards}: no shards; run `make demo` (or `lakedl etl text`) first")
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=2))
    results = []
    for model, batch in [(m, b) for m in args.model for b in args.batch]:
        settings = WorkerSettings(shards=args.shards, epochs=args.epochs, batch_size=batch, seed=0, model=model,
                                  model_options=MODEL_OPTIONS[model], optim=OptimSettings(name="adamw", lr=2e-3))
        torch.set_num_threads(2)
        one_by_two, rows = throughput(launch(train_worker, settings, "local", 1))  # in this process, 2 threads
        print(f"{model}, batch {batch}: 1 process x 2 threads: {one_by_two:,.0f} samples/s ({rows} rows/epoch)", flush=True)
        for kind in args.launchers:
            single, _ = throughput(launch(train_worker, settings, kind, 1, spark=spark))  # the entry sets 1 thread
            double, _ = throughput(launch(train_worker, settings, kind, 2, spark=spark))
            print(f"{model}, batch {batch}: {kind}: 1x1 {single:,.0f}/s, 2x1 {double:,.0f}/s -> {double / single:.2f}x, "
                  f"vs 1x2 {double / one_by_two:.2f}x", flush=True)
            common = {"command": command_line(), "launcher": kind, "model": model, "batch_per_process": batch, "rows_per_epoch": rows,
                      "samples_per_s_2x1": round(double), "goal": 1.7}
            results.append({"case": f"{model}_{kind}_2x1_vs_1x1", "ratio": round(double / single, 3),
                             "baseline": f"{kind} with 1 process x 1 thread, same model/data/batch",
                             "samples_per_s_1x1": round(single), **common})
            results.append({"case": f"{model}_{kind}_2x1_vs_1x2", "ratio": round(double / one_by_two, 3),
                            "baseline": "1 process x 2 threads (local launcher, no communication)",
                            "samples_per_s_1x2": round(one_by_two), **common})
    previous = RESULTS / "scaling.json"  # keep the cases of other models/batches from earlier runs
    kept = [r for r in (json.loads(previous.read_text())["results"] if previous.is_file() else [])
            if (r["model"], r["batch_per_process"]) not in {(x["model"], x["batch_per_process"]) for x in results}]
    path = write_result("scaling", command_line(), kept + results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
