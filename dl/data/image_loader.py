"""Loading the image ETL's Petastorm datasets for training: ``petastorm.make_reader`` sharded by rank, with
load-time augmentation (random crop after zero padding, horizontal flip) and normalisation applied in
petastorm's workers through a ``TransformSpec``; batches are ``(B, C, H, W)`` float tensors and labels.
``NativeImageDataset`` reads the same files with pyarrow and OpenCV instead (``data.image_loader=native``;
bench/image_loaders.py compares the two with a bare decoding loop)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from etl.core.errors import InputError
from etl.core.logs import quiet_known_warnings

quiet_known_warnings()  # petastorm on pyarrow 14: see etl/core/logs.py


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 0  # > 0: pad by this many zero pixels, then crop back at a random offset
    flip: bool = False  # horizontal flip with probability 1/2
    mean: float = 0.0  # normalisation after scaling to [0, 1]: (x - mean) / std
    std: float = 1.0


def augment_image(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One ``(H, W)`` or ``(H, W, C)`` uint8 image, randomly cropped (after padding) and flipped."""
    if aug.crop_padding:
        p = aug.crop_padding
        pads = ((p, p), (p, p)) + (((0, 0),) if image.ndim == 3 else ())
        padded = np.pad(image, pads)
        top, left = rng.integers(0, 2 * p + 1, size=2)
        image = padded[top:top + image.shape[0], left:left + image.shape[1]]
    if aug.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def to_chw(image: np.ndarray, aug: Augment) -> np.ndarray:
    """uint8 ``(H, W[, C])`` → normalised float32 ``(C, H, W)``."""
    x = image.astype(np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    return (x - aug.mean) / aug.std


def transform_spec(aug: Augment, train: bool, seed: int, channels: int, height: int, width: int):
    """A petastorm TransformSpec turning each row's image into a normalised ``(C, H, W)`` float array,
    augmented when ``train``."""
    from petastorm import TransformSpec

    rng = np.random.default_rng(seed)

    def fn(row: dict) -> dict:
        image = augment_image(row["image"], aug, rng) if train else row["image"]
        return {**row, "image": to_chw(image, aug)}

    return TransformSpec(fn, edit_fields=[("image", np.float32, (channels, height, width), False)])


def image_loader(url: str, batch_size: int, rank: int = 0, world_size: int = 1, aug: Augment = Augment(),
                 train: bool = False, seed: int = 0, epochs: int | None = 1, workers: int = 2, shuffle_queue: int = 0):
    """A ``petastorm.pytorch.DataLoader`` over this rank's row groups of the dataset at ``url``; use it as
    a context manager. Shapes come from the dataset's Unischema (fixed size required). ``epochs=None``
    reads for ever; ``shuffle_queue`` > 0 shuffles rows in a queue of that many (across row groups)."""
    from petastorm import make_reader
    from petastorm.etl.dataset_metadata import get_schema_from_dataset_url
    from petastorm.pytorch import DataLoader

    shape = get_schema_from_dataset_url(url).fields["image"].shape
    if any(s is None for s in shape):
        raise InputError(f"{url}: images of varying size {shape}; rerun the image ETL with image.height/width set")
    channels = 1 if len(shape) == 2 else shape[2]
    spec = transform_spec(aug, train, seed + rank, channels, shape[0], shape[1])
    reader = make_reader(url, num_epochs=epochs, cur_shard=rank if world_size > 1 else None,
                         shard_count=world_size if world_size > 1 else None, shuffle_row_groups=train,
                         seed=seed, transform_spec=spec, workers_count=workers,
                         schema_fields=["image_id", "image", "label"])
    return DataLoader(reader, batch_size=batch_size, shuffling_queue_capacity=shuffle_queue)


class NativeImageDataset(IterableDataset):
    """The same datasets without petastorm: a ``torch`` ``IterableDataset`` over this rank's row groups
    (dl/data/loaders.py's units: permuted per epoch with ``seed``, cut into equal runs of rows per rank
    (``rank_share``), then dealt out to DataLoader workers),
    PNGs decoded with OpenCV as petastorm's codec does, the same augmentation and normalisation, rows
    shuffled within each row group when training; yields ready batches (``DataLoader(ds, batch_size=None)``)."""

    def __init__(self, root: str, batch_size: int, rank: int = 0, world_size: int = 1, aug: Augment = Augment(),
                 train: bool = False, seed: int = 0) -> None:
        from dl.data.loaders import list_row_groups

        self.units = list_row_groups(root)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.aug, self.train, self.seed, self.epoch = aug, train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import cv2

        from dl.data.loaders import rank_share

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = np.arange(len(self.units))
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        images, labels = [], []
        for unit in rank_share(self.units, order, self.rank, self.world_size)[worker::workers]:
            table = unit.read(["image", "label"])
            raw, label = table.column("image").to_pylist(), table.column("label").to_numpy()
            rows = rng.permutation(len(raw)) if self.train else range(len(raw))
            for r in rows:
                image = cv2.imdecode(np.frombuffer(raw[r], dtype=np.uint8), cv2.IMREAD_UNCHANGED)
                if image.ndim == 3:
                    image = image[:, :, ::-1]  # OpenCV decodes BGR
                if self.train:
                    image = augment_image(image, self.aug, rng)
                images.append(to_chw(image, self.aug))
                labels.append(label[r])
                if len(images) == self.batch_size:
                    yield {"image": torch.from_numpy(np.stack(images)), "label": torch.from_numpy(np.asarray(labels))}
                    images, labels = [], []
        if images:
            yield {"image": torch.from_numpy(np.stack(images)), "label": torch.from_numpy(np.asarray(labels))}
