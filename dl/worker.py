"""The training worker: one function that every launcher runs on every rank.

Builds loaders over the ETL's shards, the model, optimizer and schedule from the config; trains with
masked (multi)task losses, L1/L2 penalties and gradient clipping; evaluates on dev after each epoch;
stops early on the dev metric; checkpoints atomically; resumes exactly from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dl.checkpoint import read_checkpoint, restore, save_checkpoint
from dl.distributed import make_dist
from dl.embeddings import init_from_vectors
from dl.image_data import ImageData, is_image_model
from dl.loaders import ParquetShardDataset
from dl.metrics import bias_variance, classification_report, rating_errors
from dl.models import build_model, describe
from dl.optim import (
    OptimSettings,
    ScheduleSettings,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    constrain_max_norm,
    param_groups,
    penalty,
)
from dl.tracking import MetricsSink

TASKS = ("sentiment", "rating", "rating_reg")
AMP_MODES = ("none", "bf16", "fp16")
LABEL_MAP = {"sentiment": ["negative", "positive"]}
MASK = {"sentiment": "sentiment_mask", "rating": "rating_mask", "rating_reg": "rating_mask"}


@dataclass
class WorkerSettings:
    shards: str
    task: str = "sentiment"  # sentiment | rating | rating_reg | multitask | lm; images: class | reconstruct
    task_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    batch_size: int = 64
    epochs: int = 5
    seed: int = 0
    model: str = "bow"  # a text family (dl/models) or an image family (dl/models/vision.py)
    model_options: dict = field(default_factory=dict)  # fields of that family's config dataclass
    embeddings: str | None = None  # word2vec text/binary vectors to initialize the embedding table
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    l1: float = 0.0
    l2: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    max_norm: float | None = None  # after each step, rows of every nn.Linear weight to L2 norm <= this
    patience: int | None = None
    optimal_error: float = 0.0
    checkpoint_dir: str | None = None
    resume: bool = False
    checkpoint_every: int | None = None  # also checkpoint every N optimizer steps (mid-epoch), not only per epoch
    max_epochs_this_call: int | None = None  # stop after this many epochs (to simulate an interruption)
    stop_after_steps: int | None = None  # stop after this many steps of this call, mid-epoch (ditto)
    amp: str = "none"  # none | bf16 | fp16 (fp16: CUDA only)
    device: str = "auto"  # auto (the rank's GPU if any) | cpu | cuda
    progress: bool = False  # tqdm bar on rank 0
    tracking_uri: str | None = None  # rank 0 logs metrics to this MLflow run as it trains
    run_id: str | None = None
    tensorboard_dir: str | None = None  # rank 0 writes TensorBoard scalars here
    log_every: int = 50  # steps between step-level scalars (loss, lr)
    eval_train_rows: int | None = None  # the per-epoch train-set evaluation stops after N rows (whole batches)
    length_buckets: int = 0  # text: sort each run of N training batches' rows by length (less padding)
    augment: dict = field(default_factory=dict)  # image datasets: dl.image_loader.Augment fields
    loader_workers: int = 2  # image datasets: petastorm decode threads per process
    image_loader: str = "petastorm"  # image datasets: petastorm | native (dl/image_loader.py)
    prune: dict | None = None  # a `lakedl tune` trial: rank 0 reports each epoch's dev score (dl/tune.py)


def _tasks(task: str) -> list[str]:
    return list(TASKS) if task == "multitask" else [task]


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shard_tokenizer(shards: Path):
    """The tokenizer the ETL pinned for these shards (loading checks its content hash)."""
    from etl.textprep import TextTokenizer

    manifest = json.loads((shards / "manifest.json").read_text())
    return TextTokenizer.load(shards / manifest["tokenizer_artifact"])


def task_loss(out: dict, batch: dict, tasks: list[str], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of per-task losses, each averaged over the examples that have that label."""
    total = torch.zeros(())
    for t in tasks:
        if t == "lm":  # next-token cross-entropy over every real target position (dl/models/gpt.py)
            total = total + weights.get(t, 1.0) * F.cross_entropy(out["lm"], out["lm_targets"])
            continue
        mask = batch[MASK[t]].bool()
        if not mask.any():
            continue
        if t == "rating_reg":
            loss = F.mse_loss(out[t][mask], (batch["rating"][mask] + 1).float())
        else:
            loss = F.cross_entropy(out[t][mask], batch[t][mask].long())
        total = total + weights.get(t, 1.0) * loss
    return total


def evaluate(model, loader, tasks: list[str], device: torch.device | str = "cpu", detail: bool = False,
             limit: int | None = None) -> dict:
    """Metrics per task over ``loader`` (examples with that task's label only; the first ``limit`` rows
    when given); ``detail`` adds the confusion matrix, per-class precision/recall/F1 and the example count."""
    model.eval()
    preds: dict[str, list] = {t: [] for t in tasks}
    gold: dict[str, list] = {t: [] for t in tasks}
    nll, tokens, seen = 0.0, 0, 0  # the language model's summed negative log-likelihood (nats) and target count
    with torch.no_grad():
        for batch in loader:
            if limit is not None and seen >= limit:
                break
            seen += len(batch["ids"])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch["ids"], batch["ids_lengths"])
            if "lm" in tasks:
                nll += F.cross_entropy(out["lm"].float(), out["lm_targets"], reduction="sum").item()
                tokens += len(out["lm_targets"])
                continue
            for t in tasks:
                mask = batch[MASK[t]].bool()
                if t == "rating_reg":
                    preds[t] += out[t][mask].tolist()
                    gold[t] += (batch["rating"][mask] + 1).float().tolist()
                else:
                    preds[t] += out[t][mask].argmax(-1).tolist()
                    gold[t] += batch[t][mask].tolist()
    model.train()
    metrics = {}
    for t in tasks:
        if t == "lm":
            loss = nll / max(tokens, 1)
            metrics.update({"lm_loss": loss, "lm_perplexity": math.exp(min(loss, 50.0))})
            if detail:
                metrics["lm_tokens"] = tokens
            continue
        if t == "rating_reg":
            metrics.update({f"{t}_{k}": v for k, v in rating_errors(gold[t], preds[t]).items()})
        else:
            report = classification_report(gold[t], preds[t], 2 if t == "sentiment" else 5)
            metrics.update({f"{t}_accuracy": report["accuracy"], f"{t}_f1_macro": report["f1_macro"]})
            if detail:
                metrics.update({f"{t}_{k}": v for k, v in report.items() if k not in ("accuracy", "f1_macro")})
        if detail:
            metrics[f"{t}_examples"] = len(gold[t])
    return metrics


def _score(metrics: dict, task: str) -> float:
    """The dev metric early stopping watches (higher is better)."""
    first = _tasks(task)[0]
    if first == "lm":
        return -metrics["lm_perplexity"]
    return -metrics[f"{first}_mae"] if first == "rating_reg" else metrics[f"{first}_accuracy"]


def _step(net, model, optimizer, scheduler, batch, data, s: WorkerSettings, dist, amp: Amp) -> float:
    """One optimizer step. ``batch=None`` is a shadow step (this rank is out of data while others are
    not): a zero loss over every parameter, so the all-reduce sees a zero gradient from this rank."""
    with amp.autocast():
        if batch is None:
            loss = sum((p * 0.0).sum() for p in model.parameters())
        else:
            loss = data.loss(net, batch) + penalty(model, s.l1, s.l2)
    optimizer.zero_grad()
    amp.backward(loss)
    dist.synchronize(optimizer)  # averaged gradients before clipping
    amp.unscale(optimizer)
    clip_gradients(model, s.clip_norm, s.clip_value)
    dist.step(optimizer, amp.step_fn(optimizer))
    constrain_max_norm(model, s.max_norm)
    if s.schedule.name != "plateau":
        scheduler.step()
    return float(loss.item())


class Amp:
    """Mixed precision by config: ``bf16`` (CPU or GPU autocast) or ``fp16`` (GPU autocast with a
    gradient scaler); ``none`` is plain fp32."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"amp={mode!r}: one of {', '.join(AMP_MODES)}")
        if mode == "fp16" and device.type != "cuda":
            raise ValueError("amp=fp16 needs a CUDA device; on CPU use amp=bf16")
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self):
        if self.mode == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.mode == "bf16" else torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)  # clip the true gradients

    def step_fn(self, optimizer):
        if not self.scaler:
            return optimizer.step
        def step():
            self.scaler.step(optimizer)
            self.scaler.update()
        return step


def pick_device(name: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when CUDA exists, else CPU; ``cuda`` without a GPU is refused."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r}: auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but this machine has no CUDA device: use device=auto or cpu")
    if name != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _batches_this_epoch(ds: ParquetShardDataset, batch_size: int) -> int:
    return math.ceil(ds.rows_this_epoch() / batch_size)  # every batch is full but the last


def _loader(ds) -> DataLoader:
    # its own generator: a DataLoader iterator draws a seed from the global RNG otherwise, and the global
    # RNG must advance only with training (dropout), so a resumed run replays the same masks
    return DataLoader(ds, batch_size=None, generator=torch.Generator())


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class TextData:
    """The text ETL's shards (dl/loaders.py) for the worker: padded ids and masked labels per task. The
    image counterpart is dl/image_data.py; the worker loop only calls these methods."""

    def __init__(self, s: WorkerSettings, rank: int, world_size: int) -> None:
        self.s, self.root, self.rank = s, Path(s.shards), rank
        self.tasks = _tasks(s.task)
        self.tokenizer = shard_tokenizer(self.root)
        self.fingerprint = self.tokenizer.sha256  # resuming checks the shards use the checkpoint's vocabulary
        self.fingerprint_of = "tokenizer"
        self.label_map = LABEL_MAP
        self.columns = ["ids", "sentiment", "sentiment_mask", "rating", "rating_mask"]
        # one task: train only on rows that carry its label (e.g. SST-2 skips neutral phrases); multitask: all rows
        self.keep_if = MASK.get(s.task)
        self.train_ds = ParquetShardDataset(self.root / "train", self.columns, rank, world_size, seed=s.seed,
                                            batch_size=s.batch_size, keep_if=self.keep_if,
                                            length_buckets=s.length_buckets)
        self._eval: dict[str, ParquetShardDataset] = {}  # built once: keep_if counts each row group's labels

    def build_model(self):
        model = build_model(self.s.model, self.tokenizer.vocab_size, self.s.model_options)
        if self.s.embeddings:  # pretrained vectors for the tokenizer's words (the same on every rank)
            coverage = init_from_vectors(model.embed, self.tokenizer.vocabulary(), self.s.embeddings)
            if self.rank == 0:
                print(f"embeddings from {self.s.embeddings}: {coverage['found']} of {coverage['vocab']} words",
                      flush=True)
        return model

    def planned_steps(self) -> int:
        """This rank's batches per epoch (before the first epoch: sizes the LR schedule)."""
        return _batches_this_epoch(self.train_ds, self.s.batch_size)

    def epoch(self, epoch: int):
        """This rank's batch count and batches for ``epoch``."""
        self.train_ds.set_epoch(epoch)
        return _batches_this_epoch(self.train_ds, self.s.batch_size), iter(_loader(self.train_ds))

    def loss(self, net, batch: dict) -> torch.Tensor:
        return task_loss(net(batch["ids"], batch["ids_lengths"]), batch, self.tasks, self.s.task_weights)

    @staticmethod
    def batch_len(batch: dict) -> int:
        return len(batch["ids"])

    def has_test(self) -> bool:
        return any((self.root / "test").glob("*.parquet"))

    def evaluate(self, model, split: str, device, detail: bool = False) -> dict:
        """``split`` dev, test or train (the rows of this task, all ranks' shards, ``eval_train_rows`` at most)."""
        if split not in self._eval:
            self._eval[split] = ParquetShardDataset(self.root / split, self.columns, shuffle=False, batch_size=256,
                                                    keep_if=self.keep_if if split == "train" else None)
        ds = self._eval[split]
        limit = self.s.eval_train_rows if split == "train" else None
        return evaluate(model, _loader(ds), self.tasks, device, detail, limit)

    def score(self, metrics: dict) -> float:
        return _score(metrics, self.s.task)

    def close(self) -> None:
        pass


def train_worker(s: WorkerSettings, backend: str = "none") -> dict:
    """Train on ``<shards>/train`` (this rank's row groups) and evaluate on all of ``<shards>/dev``;
    returns the history, the step count, a digest of the final weights and (one process) the model."""
    dist = make_dist(backend)
    try:
        return _train(s, dist)
    finally:
        dist.close()


def _train(s: WorkerSettings, dist) -> dict:
    device = pick_device(s.device, dist.local_rank)
    amp = Amp(s.amp, device)
    _seed(s.seed)
    data = (ImageData if is_image_model(s.model) else TextData)(s, dist.rank, dist.world_size)
    try:
        return _train_on(s, dist, device, amp, data)
    finally:
        data.close()


def _train_on(s: WorkerSettings, dist, device: torch.device, amp: Amp, data) -> dict:
    """The loop over ``data`` (TextData or dl.image_data.ImageData)."""
    rank, world_size = dist.rank, dist.world_size
    tasks, tok_hash, label_map = data.tasks, data.fingerprint, data.label_map
    model = data.build_model().to(device)
    model_desc = describe(s.model, model)
    net, optimizer = dist.wrap(model, build_optimizer(param_groups(model, s.optim), s.optim))  # same start on every rank
    # every rank must see the same schedule length (cosine depends on it), and ranks own different row counts
    steps_per_epoch = dist.max_int(data.planned_steps())
    scheduler = build_scheduler(optimizer, s.schedule, total_steps=steps_per_epoch * s.epochs)
    ckpt = Path(s.checkpoint_dir) / "last.pt" if s.checkpoint_dir else None
    best_path = ckpt.with_name("best.pt") if ckpt is not None else None
    best_weights = None  # the weights of the best dev epoch: model selection on dev only
    start_epoch, skip, step, history, best, stale = 0, 0, 0, [], -math.inf, 0
    if s.resume and ckpt is not None and ckpt.is_file():  # every rank loads the same file
        state = read_checkpoint(ckpt)
        if state["tokenizer_sha256"] != tok_hash:
            raise ValueError(f"{ckpt} was trained with {data.fingerprint_of} {state['tokenizer_sha256'][:12]}, "
                             f"{s.shards} has {tok_hash[:12]}: resume with the same shards or start a new run")
        restore(state, model=model, optimizer=optimizer, scheduler=scheduler)
        dist.broadcast_state(model, optimizer)
        progress = state["metrics"]
        start_epoch, step, skip = state["epoch"], state["step"], progress.get("batches_done", 0)
        if skip == 0:  # an end-of-epoch checkpoint: continue with the next epoch
            start_epoch += 1
        history, best, stale = progress["history"], progress["best"], progress["stale"]
        if best_path.is_file():
            best_weights = read_checkpoint(best_path)["model"]
    sink = MetricsSink(s.tensorboard_dir, s.tracking_uri, s.run_id) if rank == 0 else MetricsSink()

    def checkpoint(epoch: int, batches_done: int) -> None:
        if ckpt is not None and rank == 0:
            save_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=step,
                            config=model_desc, tokenizer_sha256=tok_hash,
                            label_map=label_map,
                            metrics={"history": history, "best": best, "stale": stale,
                                     "batches_done": batches_done})

    ran, steps_this_call, interrupted, pruned = 0, 0, False, False
    for epoch in range(start_epoch, s.epochs):
        if s.max_epochs_this_call is not None and ran >= s.max_epochs_this_call:
            break
        mine, batches = data.epoch(epoch)
        n_steps = dist.max_int(mine) if dist.even_steps else mine
        done = skip if epoch == start_epoch else 0
        losses, samples, started = [], 0, time.perf_counter()
        bar = tqdm(total=n_steps, initial=done, desc=f"epoch {epoch + 1}/{s.epochs}", unit="step",
                   disable=rank != 0 or not s.progress, leave=False)
        with dist.join(net):
            for i in range(n_steps):
                batch = next(batches, None)
                if i < done:  # resumed mid-epoch: these batches were trained on before the checkpoint
                    continue
                if batch is not None:
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                if s.stop_after_steps is not None and steps_this_call >= s.stop_after_steps:
                    interrupted = True
                    break
                loss = _step(net, model, optimizer, scheduler, batch, data, s, dist, amp)
                step += 1
                steps_this_call += 1
                bar.update()
                if batch is not None:
                    losses.append(loss)
                    samples += data.batch_len(batch)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if rank == 0 and step % s.log_every == 0:
                    sink.log({"train_step_loss": loss, "train_lr": optimizer.param_groups[0]["lr"]}, step)
                if s.checkpoint_every and step % s.checkpoint_every == 0 and i + 1 < n_steps:
                    checkpoint(epoch, i + 1)
        seconds = time.perf_counter() - started  # the step loop only, not evaluation
        bar.close()
        if interrupted:
            break
        dev = data.evaluate(model, "dev", device)
        train_eval = data.evaluate(model, "train", device)
        score = data.score(dev)
        if s.schedule.name == "plateau":
            scheduler.step(score)
        history.append({"epoch": epoch, "loss": dist.mean(float(np.mean(losses)) if losses else 0.0),
                        "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                        "samples": round(dist.mean(samples) * world_size),
                        **{f"dev_{k}": v for k, v in dev.items()}, **{f"train_{k}": v for k, v in train_eval.items()}})
        sink.log({k: v for k, v in history[-1].items() if k != "epoch"}, step)
        if score > best:
            best, stale = score, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if best_path is not None and rank == 0:
                save_checkpoint(best_path, model=model, epoch=epoch, step=step, config=model_desc,
                                tokenizer_sha256=tok_hash, label_map=label_map,
                                metrics={"dev": dev, "epoch": epoch})
        else:
            stale += 1
        ran += 1
        checkpoint(epoch, 0)
        if s.prune is not None:  # a search trial: the study decides on rank 0's report, every rank stops together
            from dl.tune import report_epoch

            pruned = bool(dist.max_int(int(rank == 0 and report_epoch(s.prune, epoch, score))))
            if pruned:
                break
        if s.patience is not None and stale > s.patience:
            break
    sink.close()
    digest = weights_digest(model)
    result = {"history": history, "epochs_run": len(history), "world_size": world_size,
              "weights_sha256": digest, "weights_sha256_by_rank": dist.gather(digest),
              "steps_by_rank": [int(x) for x in dist.gather(str(step))], "steps": step, "interrupted": interrupted,
              "pruned": pruned, "best_score": best}
    if best_weights is not None:
        model.load_state_dict(best_weights)  # what the run selected on dev
    if history:
        chosen = max(history, key=lambda h: data.score({k[4:]: v for k, v in h.items() if k.startswith("dev_")}))
        result["best_epoch"] = chosen["epoch"]
        if not interrupted and data.has_test():
            result["test"] = data.evaluate(model, "test", device, detail=True)
        first = tasks[0]
        if f"train_{first}_accuracy" in chosen:
            d = bias_variance(1 - chosen[f"train_{first}_accuracy"], 1 - chosen[f"dev_{first}_accuracy"],
                              s.optimal_error)
            result["diagnosis"] = {"verdict": d.verdict, "advice": d.advice}
    if world_size == 1:
        result["model"] = model
    return result
