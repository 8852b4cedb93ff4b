"""Image loader throughput over the image ETL's Petastorm dataset (Fashion-MNIST train split, PNG cells):
petastorm ``make_reader`` and our native loader vs decoding the same PNGs in a bare loop, one session.

    python bench/image_loaders.py [--shards data/shards/fashion_mnist/train] [--repeats 3]   (make bench-images)

bare:       read the row groups with pyarrow, then for each PNG: cv2.imdecode → float32 / 255 (the decoder
            petastorm's CompressedImageCodec uses), stacked into batches of 128 — no reader, no threads
petastorm:  dl.data.image_loader.image_loader (make_reader + TransformSpec + petastorm's DataLoader), 1 or 2
            decode threads, evaluation mode (normalise only) and training mode (random crop after
            2-pixel padding + flip + a 2,048-row shuffling queue)
native:     dl.data.image_loader.NativeImageDataset (pyarrow row groups + OpenCV, same transforms) through a
            torch DataLoader with 0 or 2 worker processes

ratio = images/s of the case / images/s of the bare loop (higher is better). Every figure is the median
of --repeats passes over the whole split, after a first pass that checks every loader returns every
image once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from common import (  # bench/common.py, beside this script
    command_line,
    median_time,
    write_result,
)
from torch.utils.data import DataLoader

from dl.data.image_loader import Augment, NativeImageDataset, image_loader
from dl.data.loaders import list_row_groups

REPO = Path(__file__).resolve().parents[1]
BATCH = 128
TRAIN_AUG = Augment(crop_padding=2, flip=True, mean=0.286, std=0.353)
EVAL_AUG = Augment(mean=0.286, std=0.353)


def bare(root: str) -> int:
    import cv2

    n = 0
    for unit in list_row_groups(root):
        table = pq.ParquetFile(unit.path).read_row_group(unit.index, columns=["image", "label"])
        raw, labels = table.column("image").to_pylist(), table.column("label").to_numpy()
        for start in range(0, len(raw), BATCH):
            images = [cv2.imdecode(np.frombuffer(b, dtype=np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
                      for b in raw[start:start + BATCH]]
            batch = torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(labels[start:start + BATCH])
            n += len(batch[0])
    return n


def petastorm(root: str, train: bool, workers: int) -> int:
    n = 0
    with image_loader(Path(root).absolute().as_uri(), BATCH, aug=TRAIN_AUG if train else EVAL_AUG, train=train,
                      workers=workers, shuffle_queue=2048 if train else 0) as loader:
        for batch in loader:
            n += len(batch["image"])
    return n


def native(root: str, train: bool, workers: int) -> int:
    ds = NativeImageDataset(root, BATCH, aug=TRAIN_AUG if train else EVAL_AUG, train=train)
    return sum(len(b["image"]) for b in DataLoader(ds, batch_size=None, num_workers=workers))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=str(REPO / "data" / "shards" / "fashion_mnist" / "train"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = sum(u.rows for u in list_row_groups(args.shards))
    cases = {
        "bare_decode_loop": lambda: bare(args.shards),
        "petastorm_eval_1thread": lambda: petastorm(args.shards, False, 1),
        "petastorm_eval_2threads": lambda: petastorm(args.shards, False, 2),
        "petastorm_train_aug_2threads": lambda: petastorm(args.shards, True, 2),
        "native_eval_0workers": lambda: native(args.shards, False, 0),
        "native_train_aug_0workers": lambda: native(args.shards, True, 0),
        "native_train_aug_2workers": lambda: native(args.shards, True, 2),
    }
    for name, fn in cases.items():  # every loader returns every image once
        assert fn() == rows, name
    seconds = {name: median_time(fn, args.repeats, warmup=0) for name, fn in cases.items()}  # warm: the check
    base = rows / seconds["bare_decode_loop"]
    results = []
    for name, s in seconds.items():
        results.append({"case": name, "images": rows, "images_per_s": round(rows / s), "ratio": round(rows / s / base, 3),
                        "baseline": "bare loop: pyarrow row groups + cv2.imdecode, same PNGs, batches of 128, 1 thread"})
        print(f"{name:<30}{rows / s:>10.0f} images/s  ratio {rows / s / base:.2f}", flush=True)
    write_result("image_loaders", command_line(), results)


if __name__ == "__main__":
    main()
