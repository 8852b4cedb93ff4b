"""GAN quality on Fashion-MNIST through our own pipeline, measured offline (no Inception weights can be
fetched here): the recipe conf/recipes/<row>.yml trained by `lakedl train` (2 processes), then its weights
chosen on dev judged by our ResNet-small (conf/recipes/resnet_small.yml: 94% test accuracy):

- ``class_agreement`` (conditional rows): the share of 10,000 samples, 1,000 drawn for each class, that the
  ResNet classifies as that class (goal >= 0.80); ``class_agreement_by_class`` per class.
- ``fid_resnet``: the Fréchet distance between the ResNet's penultimate features of 10,000 samples and of the
  10,000 test images ("FID-ResNet"; not comparable with Inception FIDs in papers), beside ``fid_floor`` — the
  same distance from 10,000 *training* images to the test images (what a perfect generator would score) — and
  ``fid_noise``, from 10,000 images of uniform noise (what no generator at all scores).
- ``class_share`` (every row): the share of samples the ResNet puts in each class (even for a generator that
  covers the classes; an unconditional row's only view of mode collapse).

    python bench/quality_gan.py [--rows cdcgan dcgan] [--judge runs/train/resnet_small] [--run ROW=RUN_DIR]

``--run`` scores a run already trained (its recipe's row) instead of training it. Writes
bench/results/quality_gan.json (each row with the commit it was measured at) and, per row,
bench/results/quality_gan/<row>_samples.png (a grid of the chosen weights) and <row>_curves.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import command_line, git_commit, recipe, recipe_settings, write_merged  # bench/common.py

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "quality_gan"
ROWS = {"cdcgan": 0.80, "dcgan": None}  # name: goal on class agreement (conditional rows)
SAMPLES = 10_000


def moments_of(judge, batches) -> tuple:
    """Summed feature moments and the judge's predicted classes over ``batches`` of pixels in [0, 1]."""
    import numpy as np

    from dl.engine.metrics import feature_moments

    total, predicted = 0.0, []
    for pixels in batches:
        features, seen = judge(pixels)
        total = total + feature_moments(features)
        predicted.append(seen.numpy())
    return total, np.concatenate(predicted)


def split_images(shards: Path, split: str, limit: int):
    """Batches of a split's first ``limit`` images as pixels in [0, 1]."""
    from dl.data.image_loader import NativeImageDataset

    seen = 0
    for batch in NativeImageDataset(str(shards / split), 500):
        images = batch["image"][: limit - seen]
        seen += len(images)
        yield images
        if seen >= limit:
            return


def score(run_dir: Path, judge_dir: Path) -> dict:
    import torch

    from dl.data.images import Judge, sample_grid
    from dl.engine.metrics import frechet_distance
    from dl.train.rundir import load_weights
    from etl.core.config import read_yaml

    model, state, _ = load_weights(run_dir)
    classes = state["label_map"]["class"]
    shards = Path(read_yaml(run_dir / "config.yml")["data"]["shards"])
    judge = Judge(judge_dir, classes, model.cfg.channels, model.cfg.size, "cpu")
    test, _ = moments_of(judge, split_images(shards, "test", SAMPLES))
    train, _ = moments_of(judge, split_images(shards, "train", SAMPLES))
    noise_rng = torch.Generator().manual_seed(1)
    shape = (500, model.cfg.channels, model.cfg.size, model.cfg.size)
    noise, _ = moments_of(judge, (torch.rand(shape, generator=noise_rng) for _ in range(SAMPLES // 500)))
    k = len(classes)
    wanted = torch.arange(SAMPLES) % k if model.cfg.conditional else None
    batches = (model.sample(500, None if wanted is None else wanted[i:i + 500], seed=100 + i // 500)
               for i in range(0, SAMPLES, 500))
    fake, predicted = moments_of(judge, batches)
    row = {"fid_resnet": round(frechet_distance(fake, test), 3), "fid_floor": round(frechet_distance(train, test), 3),
           "fid_noise": round(frechet_distance(noise, test), 3), "samples": SAMPLES,
           "class_share": {c: round(float((predicted == i).mean()), 4) for i, c in enumerate(classes)}}
    if wanted is not None:
        agree = predicted == wanted.numpy()
        row["class_agreement"] = round(float(agree.mean()), 4)
        row["class_agreement_by_class"] = {c: round(float(agree[wanted.numpy() == i].mean()), 4)
                                           for i, c in enumerate(classes)}
    result = json.loads((judge_dir / "result.json").read_text()) if (judge_dir / "result.json").is_file() else {}
    row["judge"] = {"model": judge.name, "run": str(judge_dir),
                    "test_accuracy": (result.get("test") or {}).get("class_accuracy")}
    OUT.mkdir(parents=True, exist_ok=True)
    sample_grid(model, OUT / f"{run_dir.name}_samples.png")
    if (run_dir / "curves.png").is_file():
        shutil.copy(run_dir / "curves.png", OUT / f"{run_dir.name}_curves.png")
    return row


def main(argv: list[str] | None = None) -> None:
    from dl.train.job import run_train
    from jobs.configs import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--judge", default=str(REPO / "runs" / "train" / "resnet_small"),
                    help="a run of conf/recipes/resnet_small.yml")
    ap.add_argument("--runs-dir", default=str(REPO / "runs"))
    ap.add_argument("--run", action="append", default=[], metavar="ROW=RUN_DIR", help="score this trained run")
    args = ap.parse_args(argv)
    judge = Path(args.judge).absolute()
    if not (judge / "best.pt").is_file():
        raise SystemExit(f"{judge}: no best.pt; train the judge first: lakedl train --conf "
                         "conf/recipes/resnet_small.yml --run-name resnet_small")
    given = dict(r.split("=", 1) for r in args.run)
    rows = []
    for name in args.rows:
        started, summary = time.perf_counter(), None
        if name in given:
            run_dir = Path(given[name]).absolute()
        else:
            cfg = load_config("train", REPO / "conf", [recipe(name)], overrides=[
                f"paths.runs_dir={args.runs_dir}", f"run.name={name}", f"data.judge={judge}",
                "train.progress=false", "train.log_every=200"])
            run_dir = Path(args.runs_dir) / "train" / name
            shutil.rmtree(run_dir, ignore_errors=True)
            summary = run_train(cfg)
        result = summary or json.loads((run_dir / "result.json").read_text())
        row = {"command": command_line(), "git_commit": git_commit(), "case": name, "dataset": "fashion_mnist",
               "recipe": f"conf/recipes/{name}.yml", "overrides": recipe_settings(name),
               "best_epoch": (result.get("best_epoch") or 0) + 1, "epochs_run": result.get("epochs_run"),
               "processes": result.get("processes"), **score(run_dir, judge)}
        if summary is not None:
            row["wall_s"] = round(time.perf_counter() - started)
        if ROWS[name] is not None:
            row.update(goal=ROWS[name], meets_goal=row["class_agreement"] >= ROWS[name])
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_merged("quality_gan", rows)


if __name__ == "__main__":
    main()
