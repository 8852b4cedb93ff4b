"""Training throughput on 2 network hosts with rate-limited links, by gradient exchange (needs root).

    python bench/scaling_network.py [--model rnn bow] [--bandwidth 10gbit 1gbit 100mbit] [--epochs 4]
    (make bench-scaling-network)

For each bandwidth, a `lakedl cluster up --hosts 2 --bandwidth RATE` cluster (one 1-core worker per network
namespace, every worker link shaped with tbf both ways); each case is `spark-submit jobs/train.py` from the head
host, as a user runs it: TorchDistributor with one rank on each host, against the same job with 1 process
(1x1, on one host of the 10gbit cluster: one process exchanges nothing, the link's rate does not matter).
Same model, data (the demo's text shards), per-process batch and settings as bench/scaling.py.

sync (conf/base/train.yml ``sync:``):
  dense         every gradient all-reduced as fp32, the embedding table whole (sync.sparse_embeddings=false)
  touched_rows  the embedding gradient as the rows the batch touched (allgather, exact; the default)
  compressed    dense as above, sent as fp16 (sync.compression=fp16): half the bytes of the dense exchange
  touched_rows_fp16  both: the rows exchange for the embedding table, fp16 for the other gradients
samples/s = training rows per epoch / seconds of the epoch (step loop + evaluation), the median over the epochs
after the first (bench/scaling.py's measure, from the run's history.json). ratio = 2 hosts / 1x1.
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

from common import RESULTS, command_line, git_commit, write_result  # bench/common.py, beside this script

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
        "touched_rows_fp16": ["sync.sparse_embeddings=true", "sync.compression=fp16"]}


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--bandwidth", nargs="+", default=["10gbit", "1gbit", "100mbit"])
    ap.add_argument("--sync", nargs="+", default=list(SYNC), choices=list(SYNC))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    check_root("this benchmark's network hosts")
    if not (TEXT / "manifest.json").is_file():
        sys.exit(f"{TEXT}: no shards; run `make demo` first")
    commit, work = git_commit(), Path(tempfile.mkdtemp(prefix="scaling-net-"))
    epochs = [f"train.epochs={args.epochs}"]
    baseline: dict[str, dict] = {}
    results = []
    try:
        for bandwidth in args.bandwidth:
            state = work / f"cluster-{bandwidth}"
            cluster = start_cluster(state, cores=1, memory="2g", hosts=2, bandwidth=bandwidth)
            try:
                for model in args.model:
                    if model not in baseline:
                        baseline[model] = train(cluster, work / "runs", f"{model}-1x1", 1,
                                                COMMON + MODELS[model] + epochs)
                        print(f"{model}: 1x1 {baseline[model]['samples_per_s']:,.0f}/s "
                              f"(step {baseline[model]['step_ms']} ms)", flush=True)
                    for sync in args.sync:
                        two = train(cluster, work / "runs", f"{model}-{bandwidth}-{sync}", 2,
                                    COMMON + MODELS[model] + SYNC[sync] + epochs)
                        ratio = two["samples_per_s"] / baseline[model]["samples_per_s"]
                        print(f"{model} {bandwidth} {sync}: 2 hosts {two['samples_per_s']:,.0f}/s "
                              f"(step {two['step_ms']} ms) -> {ratio:.2f}x", flush=True)
                        results.append({
                            "case": f"{model}_{bandwidth}_{sync}", "model": model, "launcher": "torch_distributor",
                            "bandwidth": bandwidth, "sync": sync, "ratio": round(ratio, 3),
                            "baseline": "the same job with 1 process (torch_distributor, 1 thread, one host)",
                            "samples_per_s_2_hosts": round(two["samples_per_s"]),
                            "samples_per_s_1x1": round(baseline[model]["samples_per_s"]),
                            "step_ms_2_hosts": two["step_ms"], "step_ms_1x1": baseline[model]["step_ms"],
                            "address_by_rank": two["addresses"], "dev_accuracy_last_epoch": two["dev_accuracy"],
                            "rows_per_epoch": two["rows"], "epochs": args.epochs, "settings": MODELS[model] + SYNC[sync],
                            "git_commit": commit, "command": command_line()})
            finally:
                stop_cluster(state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    previous = RESULTS / "scaling_network.json"  # keep the rows of cases not measured again (each has its commit)
    measured = {r["case"] for r in results}
    kept = [r for r in (json.loads(previous.read_text())["results"] if previous.is_file() else [])
            if r["case"] not in measured]
    path = write_result("scaling_network", command_line(), kept + results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
