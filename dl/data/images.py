"""The training worker's view of an image ETL dataset (``lakedl etl images``): Petastorm readers sharded by
rank, the image model built to the dataset's classes and shape, the loss and the evaluation.

Training reads an endless ``make_reader`` per rank (its row groups, shuffled, plus a shuffling queue of
rows) and calls ``ceil(train rows / (processes x batch size))`` steps an epoch, the same count on every
rank — the way Databricks' Petastorm + Horovod examples do it, so no rank runs out of data before the
others. Evaluation reads each split once, in row-group order, each rank an equal share of its rows (the
same rows in the same order every run), and gathers the parts.

Tasks: ``class`` (cross-entropy over the dataset's classes; accuracy, macro-F1, confusion matrix) and
``reconstruct`` (the autoencoder: mean squared error against the clean image in [0, 1]; with
``noise_std`` > 0 the evaluation also scores reconstructions of noised inputs against the noisy inputs
themselves, the bar a denoiser has to beat).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import torch
from torch.nn import functional as F

from dl.data.image_loader import Augment, NativeImageDataset, image_loader
from dl.engine.metrics import classification_report
from dl.models.vision import IMAGE_MODELS, build_image_model
from etl.core.errors import InputError

IMAGE_TASKS = ("class", "reconstruct")
SHUFFLE_QUEUE = 2048  # rows mixed across row groups while training


def is_image_model(name: str) -> bool:
    return name in IMAGE_MODELS


def image_manifest(shards: str | Path) -> dict:
    """The image ETL's manifest; refuses a text dataset with a message that says what to run."""
    manifest = json.loads((Path(shards) / "manifest.json").read_text())
    if "classes" not in manifest or "shape" not in manifest:
        raise InputError(f"{shards} is not an image dataset (no classes/shape in its manifest.json): image models "
                         "train on `lakedl etl images` output, e.g. data.shards=data/shards/fashion_mnist")
    if len(manifest["shape"]) < 2 or any(s is None for s in manifest["shape"][:2]):
        raise InputError(f"{shards}: images of varying size; rerun `lakedl etl images` with image.height/width set")
    return manifest


class ImageData:
    """Batches ``{"image": (B, C, H, W) float, "label": (B,) int64}`` for the training worker."""

    def __init__(self, s, rank: int, world_size: int) -> None:
        self.every_parameter_used = True  # one head, every layer on the path to it
        task, model = s.train.task, s.model.name
        if task not in IMAGE_TASKS:
            raise InputError(f"task={task!r} with image model {model!r}: one of {', '.join(IMAGE_TASKS)}")
        if (task == "reconstruct") != (model == "autoencoder"):
            raise InputError(f"task={task} goes with the autoencoder and only with it (model={model})")
        self.s, self.rank, self.world_size = s, rank, world_size
        self.root = Path(s.data.shards).absolute()
        manifest = image_manifest(self.root)
        self.classes, shape = manifest["classes"], manifest["shape"]
        self.channels = 1 if len(shape) == 2 else shape[2]
        self.height, self.width = shape[0], shape[1]
        self.aug = Augment(**s.data.augment.model_dump())
        if task == "reconstruct" and (self.aug.mean, self.aug.std) != (0.0, 1.0):
            raise InputError("the autoencoder reconstructs pixels in [0, 1]: set data.augment.mean=0 and std=1")
        self.tasks = [task]
        self.label_map = {"class": self.classes}
        # resuming checks the label space and image shape are those the checkpoint was trained on
        self.fingerprint = hashlib.sha256(json.dumps([self.classes, shape]).encode()).hexdigest()
        self.fingerprint_of = "classes and image shape"
        self.steps = math.ceil(manifest["rows_per_split"]["train"] / (world_size * s.train.batch_size))
        self._loader = None
        self._batches = None

    def url(self, split: str) -> str:
        return (self.root / split).as_uri()

    def build_model(self):
        if self.height != self.width:
            raise InputError(f"{self.root}: {self.height}x{self.width} images; the image models take square inputs "
                             "(rerun `lakedl etl images` with image.height = image.width)")
        options = {**self.s.model.options(), "channels": self.channels, "size": self.height}
        if self.s.train.task == "class":
            options["num_classes"] = len(self.classes)
        return build_image_model(self.s.model.name, options)

    def planned_steps(self) -> int:
        return self.steps

    def epoch(self, epoch: int):
        """This rank's step count and batches for ``epoch`` (the endless reader opens on first use)."""
        if self._batches is None and self.s.data.image_loader == "native":
            self._batches = self._native_stream(epoch)
        elif self._batches is None:
            self._loader = image_loader(self.url("train"), self.s.train.batch_size, self.rank, self.world_size,
                                        self.aug, train=True, seed=self.s.train.seed + epoch, epochs=None,
                                        workers=self.s.data.loader_workers, shuffle_queue=SHUFFLE_QUEUE)
            self._batches = iter(self._loader)
        return self.steps, (_tensors(next(self._batches)) for _ in range(self.steps))

    def _native_stream(self, first_epoch: int):
        """Endless batches of this rank's row groups, a new permutation each pass."""
        ds = NativeImageDataset(str(self.root / "train"), self.s.train.batch_size, self.rank, self.world_size,
                                self.aug, train=True, seed=self.s.train.seed)
        for n in itertools.count(first_epoch):
            ds.set_epoch(n)
            yield from ds

    def loss(self, net, batch: dict) -> torch.Tensor:
        out = net(batch["image"])
        if self.s.train.task == "reconstruct":
            return F.mse_loss(out, batch["image"])  # the clean image: a denoiser adds its noise inside
        return F.cross_entropy(out, batch["label"])

    @staticmethod
    def batch_len(batch: dict) -> int:
        return len(batch["image"])

    def has_test(self) -> bool:
        return any((self.root / "test").glob("*.parquet"))

    def evaluate(self, model, split: str, device, detail: bool = False, dist=None) -> dict:
        """``split`` dev, test or train (``eval_train_rows`` at most). With ``dist`` of 2+ ranks (every rank calls
        this with the same weights) each rank scores its equal share of the split's rows (``rank_share``) and the
        figures are those of the whole split, from every rank's part. Read with the native reader whatever
        ``data.image_loader`` is (the same OpenCV decode as petastorm's codec): petastorm shards by whole row
        groups, which would leave a rank of a small split with nothing and the other with all of it."""
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        limit = -(-self.s.data.eval_train_rows // world) if split == "train" and self.s.data.eval_train_rows else None
        model.eval()
        gold, preds, sq = [], [], {"reconstruct": 0.0, "denoise": 0.0, "noisy_input": 0.0}
        pixels, seen = 0, 0
        noise_std = getattr(model.cfg, "noise_std", 0.0)
        noise = torch.Generator().manual_seed(rank)  # the same noise for every evaluation
        with torch.no_grad():
            for raw in NativeImageDataset(str(self.root / split), 256, rank, world, aug=self.aug):
                if limit is not None and seen >= limit:
                    break
                batch = {k: v.to(device) for k, v in _tensors(raw).items()}
                x = batch["image"]
                seen += len(x)
                if self.s.train.task == "class":
                    preds += model(x).argmax(-1).tolist()
                    gold += batch["label"].tolist()
                    continue
                pixels += x.numel()
                sq["reconstruct"] += F.mse_loss(model(x), x, reduction="sum").item()
                if noise_std > 0:
                    noisy = (x + noise_std * torch.randn(x.shape, generator=noise).to(device)).clamp(0, 1)
                    sq["denoise"] += F.mse_loss(model(noisy), x, reduction="sum").item()
                    sq["noisy_input"] += F.mse_loss(noisy, x, reduction="sum").item()
        if world > 1:
            parts = [json.loads(p) for p in dist.gather(json.dumps([gold, preds, sq, pixels, seen]))]
            gold, preds = [g for p in parts for g in p[0]], [x for p in parts for x in p[1]]
            sq = {k: sum(p[2][k] for p in parts) for k in sq}
            pixels, seen = sum(p[3] for p in parts), sum(p[4] for p in parts)
        model.train()
        if self.s.train.task == "class":
            report = classification_report(gold, preds, len(self.classes))
            metrics = {"class_accuracy": report["accuracy"], "class_f1_macro": report["f1_macro"]}
            if detail:
                metrics.update({f"class_{k}": v for k, v in report.items() if k not in ("accuracy", "f1_macro")})
        else:
            names = ("reconstruct", "denoise", "noisy_input") if noise_std > 0 else ("reconstruct",)
            metrics = {f"{k}_mse": sq[k] / max(pixels, 1) for k in names}
        if detail:
            metrics[f"{self.s.train.task}_examples"] = seen
        return metrics

    def dev_metric(self, metrics: dict) -> float:
        """Higher is better: accuracy, or minus the (denoising) reconstruction error."""
        if self.s.train.task == "class":
            return metrics["class_accuracy"]
        return -metrics.get("denoise_mse", metrics["reconstruct_mse"])

    def close(self) -> None:
        if self._loader is not None:
            self._loader.__exit__(None, None, None)  # stops and joins the reader's threads
            self._loader = self._batches = None


def _tensors(batch: dict) -> dict:
    return {"image": batch["image"], "label": batch["label"].long()}
