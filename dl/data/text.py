"""The text ETL's shards as training data (the ``TrainData`` protocol, dl/data/protocol.py): padded ids
and masked labels per task, the (multi)task loss, and the evaluation on dev/test/train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from dl.data.embeddings import init_from_vectors
from dl.data.loaders import ParquetShardDataset
from dl.engine.metrics import classification_report, rating_errors
from dl.engine.settings import WorkerSettings
from dl.models import build_model

TASKS = ("sentiment", "rating", "rating_reg")
LABEL_MAP = {"sentiment": ["negative", "positive"]}
MASK = {"sentiment": "sentiment_mask", "rating": "rating_mask", "rating_reg": "rating_mask"}


def tasks_of(task: str) -> list[str]:
    return list(TASKS) if task == "multitask" else [task]


def shard_tokenizer(shards: Path):
    """The tokenizer the ETL pinned for these shards (loading checks its content hash)."""
    from etl.text.textprep import TextTokenizer

    manifest = json.loads((shards / "manifest.json").read_text())
    return TextTokenizer.load(shards / manifest["tokenizer_artifact"])


def task_loss(out: dict, batch: dict, tasks: list[str], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of per-task losses, each averaged over the examples that have that label. The heads that
    add nothing this step (another task's, or a task without labels in the batch) enter with weight 0, so
    every parameter gets a gradient every step and DDP need not search the graph for unused ones."""
    total = torch.zeros(())
    unused = {t for t in ("sentiment", "rating", "rating_reg") if t in out} - set(tasks)
    for t in tasks:
        if t == "lm":  # next-token cross-entropy over every real target position (dl/models/gpt.py)
            total = total + weights.get(t, 1.0) * F.cross_entropy(out["lm"], out["lm_targets"])
            continue
        mask = batch[MASK[t]].bool()
        if not mask.any():
            unused.add(t)
            continue
        if t == "rating_reg":
            loss = F.mse_loss(out[t][mask], (batch["rating"][mask] + 1).float())
        else:
            loss = F.cross_entropy(out[t][mask], batch[t][mask].long())
        total = total + weights.get(t, 1.0) * loss
    for t in sorted(unused):
        total = total + 0.0 * out[t].float().sum()
    return total


def evaluate(model, loader, tasks: list[str], device: torch.device | str = "cpu", detail: bool = False,
             limit: int | None = None) -> dict:
    """Metrics per task over ``loader`` (examples with that task's label only; the first ``limit`` rows
    when given); ``detail`` adds the confusion matrix, per-class precision/recall/F1 and the example count."""
    return metrics_of(tally(model, loader, tasks, device, limit), tasks, detail)


def tally(model, loader, tasks: list[str], device: torch.device | str = "cpu", limit: int | None = None) -> dict:
    """What the metrics are computed from: per task the predictions and gold labels; for the LM the summed
    negative log-likelihood (nats) and target count. Tallies of disjoint rows add up (``merge_tallies``)."""
    model.eval()
    preds: dict[str, list] = {t: [] for t in tasks}
    gold: dict[str, list] = {t: [] for t in tasks}
    nll, tokens, seen = 0.0, 0, 0
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
    return {"preds": preds, "gold": gold, "nll": nll, "tokens": tokens}


def merge_tallies(parts: list[dict]) -> dict:
    """The tally of the union of the parts' rows (in the parts' order)."""
    tasks = parts[0]["preds"]
    return {"preds": {t: [x for p in parts for x in p["preds"][t]] for t in tasks},
            "gold": {t: [x for p in parts for x in p["gold"][t]] for t in tasks},
            "nll": sum(p["nll"] for p in parts), "tokens": sum(p["tokens"] for p in parts)}


def metrics_of(counts: dict, tasks: list[str], detail: bool = False) -> dict:
    preds, gold, nll, tokens = counts["preds"], counts["gold"], counts["nll"], counts["tokens"]
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


def dev_metric(metrics: dict, task: str) -> float:
    """The dev metric early stopping watches (higher is better)."""
    first = tasks_of(task)[0]
    if first == "lm":
        return -metrics["lm_perplexity"]
    return -metrics[f"{first}_mae"] if first == "rating_reg" else metrics[f"{first}_accuracy"]


def batches_this_epoch(ds: ParquetShardDataset, batch_size: int) -> int:
    return math.ceil(ds.rows_this_epoch() / batch_size)  # every batch is full but the last


def epoch_loader(ds) -> DataLoader:
    # its own generator: a DataLoader iterator draws a seed from the global RNG otherwise, and the global
    # RNG must advance only with training (dropout), so a resumed run replays the same masks
    return DataLoader(ds, batch_size=None, generator=torch.Generator())


class TextData:
    """The text ETL's shards (dl/data/loaders.py) as ``TrainData``; the image counterpart is
    dl/data/images.py. ``s`` is the run's WorkerSettings (dl/engine/settings.py)."""

    def __init__(self, s: WorkerSettings, rank: int, world_size: int) -> None:
        self.s, self.root, self.rank = s, Path(s.data.shards), rank
        self.tasks = tasks_of(s.train.task)
        self.every_parameter_used = True  # the loss reaches every head (task_loss), the LM every parameter
        self.tokenizer = shard_tokenizer(self.root)
        self.fingerprint = self.tokenizer.sha256  # resuming checks the shards use the checkpoint's vocabulary
        self.fingerprint_of = "tokenizer"
        self.label_map = LABEL_MAP
        self.columns = ["ids", "sentiment", "sentiment_mask", "rating", "rating_mask"]
        # one task: train only on rows that carry its label (e.g. SST-2 skips neutral phrases); multitask: all rows
        self.keep_if = MASK.get(s.train.task)
        self.train_ds = ParquetShardDataset(self.root / "train", self.columns, rank, world_size, seed=s.train.seed,
                                            batch_size=s.train.batch_size, keep_if=self.keep_if,
                                            length_buckets=s.data.length_buckets)
        self._eval: dict[str, ParquetShardDataset] = {}  # built once: keep_if counts each row group's labels

    def build_model(self):
        model = build_model(self.s.model.name, self.tokenizer.vocab_size, self.s.model.options())
        if self.s.model.embeddings:  # pretrained vectors for the tokenizer's words (the same on every rank)
            coverage = init_from_vectors(model.embed, self.tokenizer.vocabulary(), self.s.model.embeddings)
            if self.rank == 0:
                print(f"embeddings from {self.s.model.embeddings}: {coverage['found']} of {coverage['vocab']} words",
                      flush=True)
        return model

    def planned_steps(self) -> int:
        """This rank's batches per epoch (before the first epoch: sizes the LR schedule)."""
        return batches_this_epoch(self.train_ds, self.s.train.batch_size)

    def epoch(self, epoch: int):
        """This rank's batch count and batches for ``epoch``."""
        self.train_ds.set_epoch(epoch)
        return batches_this_epoch(self.train_ds, self.s.train.batch_size), iter(epoch_loader(self.train_ds))

    def loss(self, net, batch: dict) -> torch.Tensor:
        return task_loss(net(batch["ids"], batch["ids_lengths"]), batch, self.tasks, self.s.train.task_weights)

    @staticmethod
    def batch_len(batch: dict) -> int:
        return len(batch["ids"])

    def has_test(self) -> bool:
        return any((self.root / "test").glob("*.parquet"))

    def evaluate(self, model, split: str, device, detail: bool = False, dist=None) -> dict:
        """``split`` dev, test or train (the rows of this task, all ranks' shards, ``eval_train_rows`` at most).
        With ``dist`` of 2+ ranks (every rank calls this with the same weights) each rank scores its equal
        share of the split and the figures are those of the whole split, from every rank's predictions."""
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        if split not in self._eval:
            self._eval[split] = ParquetShardDataset(self.root / split, self.columns, rank, world, shuffle=False,
                                                    batch_size=256, keep_if=self.keep_if if split == "train" else None)
        ds = self._eval[split]
        limit = -(-self.s.data.eval_train_rows // world) if split == "train" and self.s.data.eval_train_rows else None
        mine = tally(model, epoch_loader(ds), self.tasks, device, limit)
        if world > 1:
            mine = merge_tallies([json.loads(part) for part in dist.gather(json.dumps(mine))])
        return metrics_of(mine, self.tasks, detail)

    def dev_metric(self, metrics: dict) -> float:
        return dev_metric(metrics, self.s.train.task)

    def close(self) -> None:
        pass
