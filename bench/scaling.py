"""Training throughput with 2 processes vs 1, for the torch_distributor and horovod launchers, on real shards
(the text ETL's demo corpus; ResNet on the first ``--image-rows`` Fashion-MNIST training images, put through
``lakedl etl images`` once into data/bench/shards/: an epoch of all 54k takes ~14 min on one thread), same model,
data, per-process batch and gradient exchange (conf/base/train.yml's ``sync:`` defaults: sparse embedding rows,
no compression).

    python bench/scaling.py [--model bow rnn cnn transformer resnet] [--epochs 4] [--image-rows 6000]
                                                                                     (make bench-scaling)

samples/s = training rows per epoch (all ranks) / seconds of the whole epoch (step loop + dev and train
evaluation), the median over the epochs after the first (the first warms up). Per model, in one run:
  <model>_<launcher>_2x1_vs_1x1  2 processes x 1 thread vs the same launcher with 1 process x 1 thread
  <model>_<launcher>_2x1_vs_1x2  2 processes x 1 thread vs 1 process x 2 threads (what a user of this
                                 2-core box would otherwise run; local launcher, no communication)
  <model>_ceiling                two independent 1 x 1 trainings at once vs one alone (summed samples/s):
                                 what two processes can reach on this machine with no communication at all
and beside them the gradient exchange measured alone: a gloo all-reduce of the model's dense gradient and of
the full embedding table (what the rows exchange saves), milliseconds, median of 20 after 3 warm-ups, against
the 2x1 step time; and where a step's time goes at 1x1 and 2x1 (``_profile_worker``: data / compute / waiting
over 20 steps, and the exchange's own time on its threads from torch.profiler).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, command_line, git_commit, write_result  # bench/common.py, beside this script

import etl.images.config  # noqa: F401  registers the etl_images job
from dl.engine.launch import launch
from dl.engine.optim import OptimSettings
from dl.engine.settings import DataSettings, ModelSettings, TrainSettings, WorkerSettings
from dl.train.worker import train_worker, training_data
from etl.core.config import SparkSettings, load_config
from etl.core.spark import get_spark
from etl.images.pipeline import idx_array, run_etl_images

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "shards" / "reviews"
IMAGES = REPO / "data" / "bench" / "shards" / "fashion_mnist_subset"
FASHION_MNIST = REPO / "data" / "raw" / "fashion_mnist"
MODELS = {  # model: (shards, the sections' fields that differ from the shared ones below)
    "bow": (TEXT, {"train": {"batch_size": 512}}),
    "rnn": (TEXT, {"model": {"rnn": {"cell": "lstm", "embed_dim": 128, "hidden": 128, "bidirectional": True}}}),
    "cnn": (TEXT, {"model": {"cnn": {"embed_dim": 128, "filters": 100}}}),
    "transformer": (TEXT, {"model": {"transformer": {"d_model": 128, "layers": 2}}}),
    "resnet": (IMAGES, {"model": {"name": "resnet_small"}, "train": {"task": "class"},
                        "data": {"image_loader": "native", "loader_workers": 1},
                        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}),
}


def settings_for(model: str, epochs: int) -> WorkerSettings:
    shards, fields = MODELS[model]
    sections = {"data": {"shards": str(shards), "eval_train_rows": 2048, **fields.get("data", {})},
                "model": {"name": model, **fields.get("model", {})},
                "train": {"epochs": epochs, "seed": 0, "batch_size": 64, "progress": False, **fields.get("train", {})},
                "optim": fields.get("optim", {"name": "adamw", "lr": 2e-3})}
    return WorkerSettings(data=DataSettings(**sections["data"]), model=ModelSettings(**sections["model"]),
                          train=TrainSettings(**sections["train"]), optim=OptimSettings(**sections["optim"]))


def image_subset(spark, rows: int) -> None:
    """The first ``rows`` training and ``rows // 6`` test images of Fashion-MNIST as idx files, through the image
    ETL into IMAGES (dev: the ETL's 10% of train). Rebuilt only when ``rows`` changes."""
    manifest = IMAGES / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("bench_source_rows") == rows:
        return
    raw = IMAGES.parent.parent / "raw" / "fashion_mnist_subset"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("t10k", rows // 6)):
        for kind in ("images-idx3", "labels-idx1"):
            array = idx_array(FASHION_MNIST / f"{split}-{kind}-ubyte.gz")[:n]
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(raw / f"{split}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(header + array.tobytes())
    cfg = load_config("etl_images", REPO / "conf", overrides=[
        f"input.paths={json.dumps([str(raw)])}", "input.format=idx", f"output.name={IMAGES.name}",
        f"output.shards_dir={IMAGES.parent}"])
    run_etl_images(cfg, spark)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "bench_source_rows": rows}, indent=2))


def throughput(result: dict) -> dict:
    """samples/s over whole epochs (steps + evaluation), median after the first; step and evaluation seconds."""
    history = result["history"]
    timed = history[1:] or history
    whole = statistics.median(h["epoch_seconds"] + h["eval_seconds"] for h in timed)
    steps = max(result["steps_by_rank"]) / len(history) if "steps_by_rank" in result else None
    return {"samples_per_s": history[-1]["samples"] / whole, "rows": history[-1]["samples"],
            "step_ms": round(1000 * statistics.median(h["epoch_seconds"] for h in timed) / steps, 1) if steps else None,
            "eval_s": round(statistics.median(h["eval_seconds"] for h in timed), 2)}


def _alone(settings: WorkerSettings, queue) -> None:
    torch.set_num_threads(1)
    queue.put(throughput(train_worker(settings, "none"))["samples_per_s"])


def ceiling(settings: WorkerSettings) -> tuple[float, list[float]]:
    """One 1 x 1 training alone, then two at once (separate processes, no communication)."""
    ctx = mp.get_context("spawn")

    def run(n: int) -> list[float]:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_alone, args=(settings, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        speeds = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return speeds

    return run(1)[0], run(2)


def _exchange_worker(settings: WorkerSettings, backend: str) -> dict:
    """gloo all-reduce time of this model's dense gradient and of its whole embedding table."""
    import torch.distributed as dist

    from dl.engine.distributed import make_dist

    torch.set_num_threads(1)
    d = make_dist(backend)
    data = training_data(settings, d.rank, d.world_size)
    model = data.build_model()
    data.close()
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def median_ms(numel: int) -> float | None:
        if numel == 0:
            return None
        t = torch.ones(numel)
        times = []
        for i in range(23):
            started = time.perf_counter()
            dist.all_reduce(t)
            if i >= 3:
                times.append(time.perf_counter() - started)
        return round(1000 * statistics.median(times), 2)

    out = {"params": total, "embedding_params": embedding, "allreduce_dense_ms": median_ms(total - embedding),
           "allreduce_embedding_table_ms": median_ms(embedding)}
    d.close()
    return out


COMMUNICATION = ("gloo:", "nccl:", "mpi:", "horovod")  # profiler events of the exchange (on their own threads)


def _profile_worker(settings: WorkerSettings, backend: str, steps: int = 20, warmup: int = 5) -> dict:
    """Where a training step's time goes on this rank, over ``steps`` steps of the engine's own ``train_step``
    (after ``warmup``), milliseconds per step, the ranks' mean:
      data           fetching the next batch (decode, collate: the training thread does it), wall time
      compute        the training thread's CPU time in the step (forward, backward, optimizer, DDP's copies)
      waiting        the step's wall time minus that: blocked on the exchange, or off the core while another
                     process's thread has it
      communication  the exchange's operators (gloo all-reduce/allgather) on their own threads, from a second
                     pass under torch.profiler (their durations, peer waits included); they overlap the
                     backward, so this is not part of a sum
    The first three come from a pass without the profiler: under it, operators slow down far more when two
    processes share the cores (ResNet's compute read 2.2x at 2x1 with it), which would hide the waiting."""
    from torch.profiler import ProfilerActivity, profile

    from dl.engine.distributed import make_dist, sparse_embeddings
    from dl.engine.loop import Amp, train_step
    from dl.engine.optim import build_optimizer, build_scheduler, param_groups

    torch.set_num_threads(1)
    d = make_dist(backend)
    torch.manual_seed(0)
    data = training_data(settings, d.rank, d.world_size)
    model = data.build_model()
    optimizer = build_optimizer(param_groups(model, settings.optim), settings.optim)
    if d.world_size > 1 and settings.sync.sparse_embeddings:
        sparse_embeddings(model)
    net, optimizer = d.wrap(model, optimizer, find_unused=not data.every_parameter_used, sync=settings.sync)
    scheduler = build_scheduler(optimizer, settings.schedule, total_steps=10 * (steps + warmup))
    batches = itertools.chain.from_iterable(data.epoch(e)[1] for e in itertools.count())  # as many as asked
    amp = Amp("none", torch.device("cpu"))

    def step() -> tuple[float, float, float]:
        started = time.perf_counter()
        batch = next(batches)
        fetched, cpu = time.perf_counter(), time.thread_time()
        train_step(net, model, optimizer, scheduler, [(batch, False)], data, settings, d, amp)
        return fetched - started, time.thread_time() - cpu, time.perf_counter() - fetched

    for _ in range(warmup):
        step()
    timed = [step() for _ in range(steps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    data.close()
    comm = sum(e.time_range.elapsed_us() for e in prof.events() if e.name.startswith(COMMUNICATION)) / 1000 / steps
    wall, cpu = sum(t[2] for t in timed) / steps * 1000, sum(t[1] for t in timed) / steps * 1000
    out = {"data_ms": sum(t[0] for t in timed) / steps * 1000, "compute_ms": cpu, "waiting_ms": max(wall - cpu, 0.0),
           "communication_ms": comm, "step_ms": wall}
    parts = [json.loads(p) for p in d.gather(json.dumps(out))]
    d.close()
    return {k: round(statistics.mean(p[k] for p in parts), 1) for k in out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--launchers", nargs="+", default=["torch_distributor", "horovod"])
    ap.add_argument("--image-rows", type=int, default=6000, help="resnet: Fashion-MNIST training images used")
    args = ap.parse_args(argv)
    if not (TEXT / "manifest.json").is_file() or not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        sys.exit("no demo shards or Fashion-MNIST files; run `make demo` first")
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=2))
    if "resnet" in args.model:
        image_subset(spark, args.image_rows)
    commit = git_commit()
    previous = RESULTS / "scaling.json"  # other models' rows from earlier runs stay (each row has its commit)
    earlier = [r for r in (json.loads(previous.read_text())["results"] if previous.is_file() else [])
               if r.get("git_commit")]
    results: list[dict] = []
    for model in args.model:
        settings = settings_for(model, args.epochs)
        torch.set_num_threads(2)
        one_by_two = throughput(launch(train_worker, settings, "local", 1))  # in this process, 2 threads
        torch.set_num_threads(1)
        alone, pair = ceiling(settings)
        exchange = launch(_exchange_worker, settings, "local", 2)
        profiled = {f"profile_{n}x1": launch(_profile_worker, settings, "local", n) for n in (1, 2)}
        print(f"{model}: per step (ms) {profiled}", flush=True)
        print(f"{model}: 1x2 {one_by_two['samples_per_s']:,.0f}/s; ceiling {sum(pair):,.0f}/s vs {alone:,.0f}/s "
              f"alone = {sum(pair) / alone:.2f}x; all-reduce {exchange}", flush=True)
        common = {"command": command_line(), "git_commit": commit, "model": model,
                  "batch_per_process": settings.train.batch_size, "rows_per_epoch": one_by_two["rows"],
                  "epochs": args.epochs}
        results.append({"case": f"{model}_ceiling", "ratio": round(sum(pair) / alone, 3),
                        "baseline": "one 1x1 training alone (local, no communication)",
                        "samples_per_s_two_at_once": [round(x) for x in pair], "samples_per_s_alone": round(alone),
                        **exchange, **profiled, **common})
        for kind in args.launchers:
            single = throughput(launch(train_worker, settings, kind, 1, spark=spark))  # the entry sets 1 thread
            double = throughput(launch(train_worker, settings, kind, 2, spark=spark))
            r1, r2 = double["samples_per_s"] / single["samples_per_s"], double["samples_per_s"] / one_by_two["samples_per_s"]
            print(f"{model}: {kind}: 1x1 {single['samples_per_s']:,.0f}/s, 2x1 {double['samples_per_s']:,.0f}/s -> "
                  f"{r1:.2f}x (ceiling {sum(pair) / alone:.2f}x), vs 1x2 {r2:.2f}x; step ms 1x1 {single['step_ms']}, "
                  f"2x1 {double['step_ms']}", flush=True)
            sides = {"launcher": kind, "samples_per_s_2x1": round(double["samples_per_s"]),
                     "step_ms_2x1": double["step_ms"], "eval_s_2x1": double["eval_s"], **common}
            results.append({"case": f"{model}_{kind}_2x1_vs_1x1", "ratio": round(r1, 3), "goal": 1.7,
                            "ceiling_ratio": round(sum(pair) / alone, 3),
                            "baseline": f"{kind} with 1 process x 1 thread, same model/data/batch",
                            "samples_per_s_1x1": round(single["samples_per_s"]), "step_ms_1x1": single["step_ms"],
                            "eval_s_1x1": single["eval_s"], **sides})
            results.append({"case": f"{model}_{kind}_2x1_vs_1x2", "ratio": round(r2, 3),
                            "baseline": "1 process x 2 threads (local launcher, no communication)",
                            "samples_per_s_1x2": round(one_by_two["samples_per_s"]), "step_ms_1x2": one_by_two["step_ms"],
                            **sides})
        done = {r["model"] for r in results}  # written as each model finishes: a later crash keeps these
        kept = [r for r in earlier if r["model"] not in done or r.get("bench") == "time_to_accuracy"]
        path = write_result("scaling", command_line(), kept + results)
        print(f"wrote {model}'s rows to {path}", flush=True)


if __name__ == "__main__":
    main()
