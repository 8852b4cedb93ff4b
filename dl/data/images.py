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

import numpy as np
import torch
from torch.nn import functional as F

from dl.data.image_loader import Augment, NativeImageDataset, image_loader
from dl.engine.metrics import classification_report, feature_moments, frechet_distance
from dl.models.vision import IMAGE_MODELS, build_image_model
from etl.core.errors import InputError

IMAGE_TASKS = ("class", "reconstruct", "generate")
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
        if (task == "generate") != (model == "dcgan"):
            raise InputError(f"task={task} goes with the GAN (model=dcgan) and only with it (model={model})")
        self.s, self.rank, self.world_size = s, rank, world_size
        self.root = Path(s.data.shards).absolute()
        manifest = image_manifest(self.root)
        self.classes, shape = manifest["classes"], manifest["shape"]
        self.channels = 1 if len(shape) == 2 else shape[2]
        self.height, self.width = shape[0], shape[1]
        self.aug = Augment(**s.data.augment.model_dump())
        if task in ("reconstruct", "generate") and (self.aug.mean, self.aug.std) != (0.0, 1.0):
            raise InputError(f"{model} works on pixels in [0, 1]: set data.augment.mean=0 and std=1")
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
        if self.s.train.task in ("class", "generate"):
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


class Judge:
    """A trained image classifier (a `lakedl train` run directory: best.pt, config.yml) that scores generated
    images: its penultimate features (the input of its last linear layer) for a Fréchet distance, and the
    class it sees. Images go in as pixels in [0, 1] and are normalised as the classifier was trained."""

    def __init__(self, run_dir: str | Path, classes: list, channels: int, size: int, device) -> None:
        from dl.engine.checkpoint import load_model, run_weights
        from etl.core.config import read_yaml

        run_dir = Path(run_dir)
        weights = run_weights(run_dir)
        if weights is None:
            raise InputError(f"data.judge={run_dir}: no best.pt or last.pt; train an image classifier there first")
        self.model, state = load_model(weights)
        config = state["config"]
        if (state.get("label_map") or {}).get("class") != classes or (config.get("channels"), config.get("size")) != (
                channels, size):
            raise InputError(f"data.judge={run_dir} was trained on other classes or another image shape than this "
                             "dataset: train the judge on the same `lakedl etl images` output")
        self.model.to(device)
        self.name = config["model"]
        augment = read_yaml(run_dir / "config.yml")["data"].get("augment", {})
        self.mean, self.std = float(augment.get("mean", 0.0)), float(augment.get("std", 1.0))
        last = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)][-1]
        self._seen: list = []
        last.register_forward_hook(lambda module, inputs, output: self._seen.append(inputs[0].detach()))

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """``(features (B, d) float64, predicted classes (B,))`` of images in [0, 1]."""
        self._seen.clear()
        predicted = self.model((pixels - self.mean) / self.std).argmax(-1)
        return self._seen[-1].flatten(1).double().cpu().numpy(), predicted.cpu()


def save_grid(images: torch.Tensor, cols: int, path: str | Path, pad: int = 2) -> Path:
    """``images (N, C, H, W)`` in [0, 1] as one PNG of ``cols`` columns (rows in order), 2x upscaled."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8) * 255
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = pixels[i]
    picture = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2),
                                                                            Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def sample_grid(model, path: str | Path, per_class: int = 8, n: int = 64, seed: int = 0) -> Path:
    """A GAN's samples as a PNG: one row per class (``per_class`` each) when conditional, else ``n`` in 8 columns."""
    if model.cfg.conditional:
        labels = torch.arange(model.cfg.num_classes).repeat_interleave(per_class)
        return save_grid(model.sample(len(labels), labels, seed=seed), per_class, path)
    return save_grid(model.sample(n, seed=seed), 8, path)


class GanData(ImageData):
    """The GAN's view of an image dataset (task ``generate``, model dcgan): the same sharded training batches,
    two ``phases`` — the discriminator's step (real images against generated ones, generator frozen), then
    the generator's (its images judged real by the discriminator: the non-saturating loss) — and an evaluation
    of samples against the real images of a split.

    Noise: each loss draws its own, seeded by (train.seed, rank, the model's ``draws`` count), so ranks draw
    different noise and a resumed run draws what an uninterrupted one would have. Evaluation: the
    discriminator's accuracy on the split's real images and on as many samples (in a conditional model, of the
    real images' classes); with ``data.judge`` the Fréchet distance between the judge's features of the samples
    and of the real images (``fid``, lower is better: the dev metric) and the share of samples the judge
    classifies as their class (``class_agreement``). Without a judge the last epoch is kept. After each dev
    evaluation rank 0 writes ``samples/epoch_NNN.png`` into the run directory."""

    phases = ("discriminator", "generator")

    def __init__(self, s, rank: int, world_size: int) -> None:
        super().__init__(s, rank, world_size)
        self.tasks = ["generate"]
        self.model = None
        self._judge = None

    def build_model(self):
        self.model = super().build_model()
        return self.model

    def _noise(self, n: int, device):
        seed = [self.s.train.seed, self.rank, int(self.model.draws)]
        with torch.no_grad():
            self.model.draws += 1
        z, labels = self.model.noise(n, torch.Generator().manual_seed(int(np.random.SeedSequence(seed)
                                                                          .generate_state(1)[0])))
        return z.to(device), None if labels is None else labels.to(device)

    def loss(self, nets, batch: dict, phase: str) -> torch.Tensor:
        real, labels = batch["image"] * 2 - 1, batch["label"]
        conditional = self.model.cfg.conditional
        z, fake_labels = self._noise(len(real), real.device)
        both = torch.cat([labels, fake_labels]) if conditional else None
        # the discriminator sees one batch of real and generated images in both phases: its batch norm then
        # normalises them alike whichever part steps (a batch of generated images alone, in the generator's
        # phase only, is normalised by its own statistics: the generator learns to pass that, not the real test)
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.model.generator(z, fake_labels)
            logits = nets["discriminator"](torch.cat([real, fake]), both)
            target = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
            return F.binary_cross_entropy_with_logits(logits, target)
        fake = nets["generator"](z, fake_labels)
        logits = self.model.discriminator(torch.cat([real, fake]), both)[len(real):]
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))  # the non-saturating loss

    def evaluate(self, model, split: str, device, detail: bool = False, dist=None) -> dict:
        """Figures of samples against ``split``'s real images (``train``: none; dl/engine/loop.py still calls it)."""
        if split == "train":
            return {}
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        if self.s.data.judge and self._judge is None:
            self._judge = Judge(self.s.data.judge, self.classes, self.channels, self.height, device)
        judge, conditional = self._judge, model.cfg.conditional
        model.eval()
        counts = np.zeros(4)  # real images, real judged real, fakes judged fake, fakes of their class by the judge
        real_m = fake_m = 0.0
        noise = torch.Generator().manual_seed(10_000 + rank)  # the same samples' noise at every evaluation
        with torch.no_grad():
            for raw in NativeImageDataset(str(self.root / split), 256, rank, world, aug=self.aug):
                batch = {k: v.to(device) for k, v in _tensors(raw).items()}
                x, labels = batch["image"], batch["label"]
                z, _ = model.noise(len(x), noise)
                fake = (model.generator(z.to(device), labels if conditional else None) + 1) / 2
                d_real = model.discriminator(x * 2 - 1, labels if conditional else None)
                d_fake = model.discriminator(fake * 2 - 1, labels if conditional else None)
                counts[:3] += [len(x), int((d_real > 0).sum()), int((d_fake < 0).sum())]
                if judge is not None:
                    real_f, _ = judge(x)
                    fake_f, seen = judge(fake)
                    counts[3] += int((seen == labels.cpu()).sum())
                    real_m = real_m + feature_moments(real_f)
                    fake_m = fake_m + feature_moments(fake_f)
        model.train()
        parts = [counts] + ([real_m, fake_m] if judge is not None else [])
        if world > 1:  # sums over ranks
            totals = dist.average_(torch.from_numpy(np.concatenate(parts)), name=f"gan_eval_{split}")
            parts = np.split(totals.numpy() * world, np.cumsum([len(p) for p in parts])[:-1])
        n = max(parts[0][0], 1)
        metrics = {"d_real_accuracy": float(parts[0][1] / n), "d_fake_accuracy": float(parts[0][2] / n),
                   "draws": int(model.draws)}
        if judge is not None:
            metrics["fid"] = frechet_distance(parts[1], parts[2])
            if conditional:
                metrics["class_agreement"] = float(parts[0][3] / n)
        if detail:
            metrics["generate_examples"] = int(parts[0][0])
        if split == "dev" and rank == 0 and self.s.run.checkpoint_dir:
            epoch = int(model.draws) // (len(self.phases) * self.steps)  # one draw per batch and phase
            sample_grid(model, Path(self.s.run.checkpoint_dir) / "samples" / f"epoch_{epoch:03d}.png")
        return metrics

    def dev_metric(self, metrics: dict) -> float:
        """Minus the judge's Fréchet distance; without a judge the noise draws so far (the last epoch wins)."""
        return -metrics["fid"] if "fid" in metrics else float(metrics["draws"])
