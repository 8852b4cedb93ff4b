"""The training worker: one function that every launcher runs on every rank.

Builds loaders over the ETL's shards, the model, optimizer and schedule from the config; trains with
masked (multi)task losses, L1/L2 penalties and gradient clipping; evaluates on dev after each epoch;
stops early on the dev metric; checkpoints atomically; resumes exactly from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from dl.checkpoint import read_checkpoint, restore, save_checkpoint
from dl.distributed import make_dist
from dl.loaders import ParquetShardDataset
from dl.metrics import bias_variance, classification_report, rating_errors
from dl.models.bow import BowClassifier, BowConfig
from dl.optim import OptimSettings, ScheduleSettings, build_optimizer, build_scheduler, clip_gradients, penalty

TASKS = ("sentiment", "rating", "rating_reg")
MASK = {"sentiment": "sentiment_mask", "rating": "rating_mask", "rating_reg": "rating_mask"}


@dataclass
class WorkerSettings:
    shards: str
    task: str = "sentiment"  # sentiment | rating | rating_reg | multitask
    task_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    batch_size: int = 64
    epochs: int = 5
    seed: int = 0
    embed_dim: int = 64
    hidden: int = 64
    dropout: float = 0.1
    batch_norm: bool = False
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    l1: float = 0.0
    l2: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    patience: int | None = None
    optimal_error: float = 0.0
    checkpoint_dir: str | None = None
    resume: bool = False
    max_epochs_this_call: int | None = None  # stop after this many epochs (to simulate an interruption)


def _tasks(task: str) -> list[str]:
    return list(TASKS) if task == "multitask" else [task]


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _vocab_size(shards: Path) -> tuple[int, str]:
    """Vocabulary size and content hash of the tokenizer the ETL pinned for these shards."""
    from etl.textprep import TextTokenizer

    manifest = json.loads((shards / "manifest.json").read_text())
    tok = TextTokenizer.load(shards / manifest["tokenizer_artifact"])  # checks the content hash
    return tok.vocab_size, tok.sha256


def task_loss(out: dict, batch: dict, tasks: list[str], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of per-task losses, each averaged over the examples that have that label."""
    total = torch.zeros(())
    for t in tasks:
        mask = batch[MASK[t]].bool()
        if not mask.any():
            continue
        if t == "rating_reg":
            loss = F.mse_loss(out[t][mask], (batch["rating"][mask] + 1).float())
        else:
            loss = F.cross_entropy(out[t][mask], batch[t][mask].long())
        total = total + weights.get(t, 1.0) * loss
    return total


def evaluate(model, loader, tasks: list[str]) -> dict:
    model.eval()
    preds: dict[str, list] = {t: [] for t in tasks}
    gold: dict[str, list] = {t: [] for t in tasks}
    with torch.no_grad():
        for batch in loader:
            out = model(batch["ids"], batch["ids_lengths"])
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
        if t == "rating_reg":
            metrics.update({f"{t}_{k}": v for k, v in rating_errors(gold[t], preds[t]).items()})
        else:
            report = classification_report(gold[t], preds[t], 2 if t == "sentiment" else 5)
            metrics.update({f"{t}_accuracy": report["accuracy"], f"{t}_f1_macro": report["f1_macro"]})
    return metrics


def _score(metrics: dict, task: str) -> float:
    """The dev metric early stopping watches (higher is better)."""
    first = _tasks(task)[0]
    return -metrics[f"{first}_mae"] if first == "rating_reg" else metrics[f"{first}_accuracy"]


def _step(net, model, optimizer, scheduler, batch, tasks, s: WorkerSettings) -> float:
    out = net(batch["ids"], batch["ids_lengths"])
    loss = task_loss(out, batch, tasks, s.task_weights) + penalty(model, s.l1, s.l2)
    optimizer.zero_grad()
    loss.backward()
    clip_gradients(model, s.clip_norm, s.clip_value)
    optimizer.step()
    if s.schedule.name != "plateau":
        scheduler.step()
    return loss.item()


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def train_worker(s: WorkerSettings, backend: str = "none") -> dict:
    """Train on ``<shards>/train`` (this rank's row groups) and evaluate on all of ``<shards>/dev``;
    returns the history, the step count, a digest of the final weights and (one process) the model."""
    dist = make_dist(backend)
    try:
        return _train(s, dist)
    finally:
        dist.close()


def _train(s: WorkerSettings, dist) -> dict:
    rank, world_size = dist.rank, dist.world_size
    shards = Path(s.shards)
    tasks = _tasks(s.task)
    vocab, tok_hash = _vocab_size(shards)
    _seed(s.seed)
    columns = ["ids", "sentiment", "sentiment_mask", "rating", "rating_mask"]
    train_ds = ParquetShardDataset(shards / "train", columns, rank, world_size, seed=s.seed, batch_size=s.batch_size)
    dev_ds = ParquetShardDataset(shards / "dev", columns, shuffle=False, batch_size=256)
    train_eval_ds = ParquetShardDataset(shards / "train", columns, shuffle=False, batch_size=256)
    model_cfg = BowConfig(vocab, s.embed_dim, s.hidden, s.dropout, s.batch_norm)
    model = BowClassifier(model_cfg)
    net, optimizer = dist.wrap(model, build_optimizer(model.parameters(), s.optim))  # same start on every rank
    steps_per_epoch = math.ceil(train_ds.rows_this_epoch() / s.batch_size)
    scheduler = build_scheduler(optimizer, s.schedule, total_steps=steps_per_epoch * s.epochs)
    ckpt = Path(s.checkpoint_dir) / "last.pt" if s.checkpoint_dir else None
    start_epoch, step, history, best, stale = 0, 0, [], -math.inf, 0
    if s.resume and ckpt is not None and ckpt.is_file():  # every rank loads the same file
        state = read_checkpoint(ckpt)
        if state["tokenizer_sha256"] != tok_hash:
            raise ValueError(f"{ckpt} was trained with tokenizer {state['tokenizer_sha256'][:12]}, the shards use "
                             f"{tok_hash[:12]}: resume with the same shards or start a new run")
        restore(state, model=model, optimizer=optimizer, scheduler=scheduler)
        start_epoch, step = state["epoch"] + 1, state["step"]
        history, best, stale = state["metrics"]["history"], state["metrics"]["best"], state["metrics"]["stale"]
    ran = 0
    for epoch in range(start_epoch, s.epochs):
        if s.max_epochs_this_call is not None and ran >= s.max_epochs_this_call:
            break
        train_ds.set_epoch(epoch)
        losses = []
        with dist.join(net):
            for batch in DataLoader(train_ds, batch_size=None):
                losses.append(_step(net, model, optimizer, scheduler, batch, tasks, s))
                step += 1
        dev = evaluate(model, DataLoader(dev_ds, batch_size=None), tasks)
        train_eval = evaluate(model, DataLoader(train_eval_ds, batch_size=None), tasks)
        score = _score(dev, s.task)
        if s.schedule.name == "plateau":
            scheduler.step(score)
        history.append({"epoch": epoch, "loss": dist.mean(float(np.mean(losses)) if losses else 0.0),
                        "lr": optimizer.param_groups[0]["lr"],
                        **{f"dev_{k}": v for k, v in dev.items()}, **{f"train_{k}": v for k, v in train_eval.items()}})
        best, stale = (score, 0) if score > best else (best, stale + 1)
        ran += 1
        if ckpt is not None and rank == 0:
            save_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=step,
                            config={"model": "bow", **model_cfg.to_dict()}, tokenizer_sha256=tok_hash,
                            label_map={"sentiment": ["negative", "positive"]},
                            metrics={"history": history, "best": best, "stale": stale})
        if s.patience is not None and stale > s.patience:
            break
    digest = weights_digest(model)
    result = {"history": history, "epochs_run": len(history), "world_size": world_size,
              "weights_sha256": digest, "weights_sha256_by_rank": dist.gather(digest),
              "steps_by_rank": [int(x) for x in dist.gather(str(step))], "steps": step}
    if world_size == 1:
        result["model"] = model
    first = tasks[0]
    if first != "rating_reg" and history:
        last = history[-1]
        d = bias_variance(1 - last[f"train_{first}_accuracy"], 1 - last[f"dev_{first}_accuracy"], s.optimal_error)
        result["diagnosis"] = {"verdict": d.verdict, "advice": d.advice}
    return result
