"""Training throughput on 2 network hosts with rate-limited links, by gradient exchange (needs root).

    python bench/scaling_network.py [--model rnn bow] [--bandwidth 10gbit 1gbit 100mbit] [--sync ...] [--epochs 4]
                                    [--repeats 1]
    (make bench-scaling-network)

For each bandwidth, a `lakedl cluster up --hosts 2 --bandwidth RATE` cluster (one 1-core worker per network
namespace, every worker link shaped with tbf both ways); each case is `spark-submit jobs/train.py` from the head
host, as a user runs it: TorchDistributor with one rank on each host, against the same job with 1 process
(1x1, on one host of the first cluster measured: one process exchanges nothing, the link's rate does not matter).
Same model, data (the demo's text shards), per-process batch and settings as bench/scaling.py.

sync (conf/base/train.yml ``sync:``):
  dense         every gradient all-reduced as fp32, the embedding table whole (sync.sparse_embeddings=false)
  touched_rows  the embedding gradient as the rows the batch touched (allgather, exact; the default)
  compressed    dense as above, sent as fp16 (sync.compression=fp16): half the bytes of the dense exchange
  touched_rows_fp16  both: the rows exchange for the embedding table, fp16 for the other gradients
  touched_rows_fp16_accumulate2  as touched_rows_fp16, gradients exchanged once per 2 micro-batches
                (sync.accumulate=2: each optimizer step sees twice the rows; its 1x1 baseline does the same)
samples/s = training rows per epoch / seconds of the epoch (step loop + evaluation), the median over the epochs
after the first (bench/scaling.py's measure, from the run's history.json). With --repeats N the 1x1 baseline and
the 2-host run alternate N times per case and the ratio is of the two medians. ratio = 2 hosts / 1x1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

from etl.core.netns import check_root
from etl.core.standalone import driver_command, spark_home, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "shards" / "reviews"
COMMON = ["train.seed=0", "train.batch_size=64", "data.eval_train_rows=2048", "optim.name=adamw", "optim.lr=0.002",
          "train.progress=false", "launcher.max_restarts=0"]
MODELS = {  # bench/scaling.py's settings for these models, as --set
    "rnn": ["model.name=rnn", "model.rnn.cell=lstm", "model.rnn.embed_dim=128", "model.rnn.hidden=128",
            "model.rnn.bidirectional=true"],
    "bow": ["model.name=bow", "train.batch_size=512"],
}
SYNC = {"dense": ["sync.sparse_embeddings=false", "sync.compression=none"],
        "touched_rows": ["sync.sparse_embeddings=true", "sync.compression=none"],
        "compressed": ["sync.sparse_embeddings=false", "sync.compression=fp16"],
        "touched_rows_fp16": ["sync.sparse_embeddings=true", "sync.compression=fp16"],
        "touched_rows_fp16_accumulate2": ["sync.sparse_embeddings=true", "sync.compression=fp16",
                                          "sync.accumulate=2"]}


def train(cluster, runs: Path, name: str, processes: int, sets: list[str]) -> dict:
    """`spark-submit jobs/train.py` on the head host; samples/s and step time from the run's history."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP=cluster.driver_host, PYTHONPATH=str(REPO))
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.master_url,
           "--conf", f"spark.driver.host={cluster.driver_host}", "--conf", "spark.ui.enabled=false",
           str(REPO / "jobs" / "train.py"), "--shards", str(TEXT), "--launcher", "torch_distributor",
           "--processes", str(processes), "--run-name", name, "--set", f"paths.runs_dir={runs}",
           *[arg for s in sets for arg in ("--set", s)]]
    out = subprocess.run(driver_command(cluster, cmd), cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {name} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    run = runs / "train" / name
    result = json.loads((run / "result.json").read_text())
    history = json.loads((run / "history.json").read_text())
    timed = history[1:] or history
    whole = statistics.median(h["epoch_seconds"] + h["eval_seconds"] for h in timed)
    steps = result["steps"] / len(history)
    return {"samples_per_s": history[-1]["samples"] / whole, "rows": history[-1]["samples"],
            "step_ms": round(1000 * statistics.median(h["epoch_seconds"] for h in timed) / steps, 1),
            "addresses": result.get("address_by_rank"), "dev_accuracy": history[-1].get("dev_sentiment_accuracy")}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median samples/s (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["samples_per_s"])[(len(runs) - 1) // 2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--bandwidth", nargs="+", default=["10gbit", "1gbit", "100mbit"])
    ap.add_argument("--sync", nargs="+", default=list(SYNC), choices=list(SYNC))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="alternating 1x1 / 2-host runs per case (median)")
    args = ap.parse_args(argv)
    check_root("this benchmark's network hosts")
    if not (TEXT / "manifest.json").is_file():
        sys.exit(f"{TEXT}: no shards; run `make demo` first")
    commit, work = git_commit(), Path(tempfile.mkdtemp(prefix="scaling-net-"))
    epochs = [f"train.epochs={args.epochs}"]
    baseline: dict[tuple, list[dict]] = {}  # (model, 1x1 settings) -> its runs, shared by the cases that match
    results = []
    try:
        for bandwidth in args.bandwidth:
            state = work / f"cluster-{bandwidth}"
            cluster = start_cluster(state, cores=1, memory="2g", hosts=2, bandwidth=bandwidth)
            try:
                for model in args.model:
                    for sync in args.sync:
                        alone = [x for x in SYNC[sync] if x.startswith("sync.accumulate=")]  # what 1 process uses
                        key, twos = (model, *alone), []
                        runs = baseline.setdefault(key, [])
                        for r in range(args.repeats):
                            if len(runs) <= r:
                                runs.append(train(cluster, work / "runs", f"{model}-1x1-{len(runs)}", 1,
                                                  COMMON + MODELS[model] + alone + epochs))
                                print(f"{model} {' '.join(alone)}: 1x1 {runs[-1]['samples_per_s']:,.0f}/s "
                                      f"(step {runs[-1]['step_ms']} ms)", flush=True)
                            twos.append(train(cluster, work / "runs", f"{model}-{bandwidth}-{sync}-{r}", 2,
                                              COMMON + MODELS[model] + SYNC[sync] + epochs))
                            print(f"{model} {bandwidth} {sync}: 2 hosts {twos[-1]['samples_per_s']:,.0f}/s "
                                  f"(step {twos[-1]['step_ms']} ms)", flush=True)
                        one = _median_run(runs[:args.repeats])
                        two = _median_run(twos)
                        ratio = two["samples_per_s"] / one["samples_per_s"]
                        print(f"{model} {bandwidth} {sync}: {ratio:.2f}x (medians of {args.repeats})", flush=True)
                        results.append({
                            "case": f"{model}_{bandwidth}_{sync}", "model": model, "launcher": "torch_distributor",
                            "bandwidth": bandwidth, "sync": sync, "ratio": round(ratio, 3),
                            "baseline": "the same job with 1 process (torch_distributor, 1 thread, one host)",
                            "repeats": args.repeats,
                            "samples_per_s_2_hosts": round(two["samples_per_s"]),
                            "samples_per_s_1x1": round(one["samples_per_s"]),
                            "ratios_by_repeat": [round(t["samples_per_s"] / b["samples_per_s"], 3)
                                                 for t, b in zip(twos, runs)],
                            "step_ms_2_hosts": two["step_ms"], "step_ms_1x1": one["step_ms"],
                            "address_by_rank": two["addresses"], "dev_accuracy_last_epoch": two["dev_accuracy"],
                            "dev_accuracy_last_epoch_1x1": one["dev_accuracy"],
                            "rows_per_epoch": two["rows"], "epochs": args.epochs,
                            "settings": MODELS[model] + SYNC[sync],
                            "git_commit": commit, "command": command_line()})
            finally:
                stop_cluster(state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {write_merged('scaling_network', results)}")  # other cases' rows kept, each with its commit


if __name__ == "__main__":
    main()
