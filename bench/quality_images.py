"""Fashion-MNIST quality runs through our own pipeline: `lakedl etl images` (the idx files from `lakedl data
fetch`) → `lakedl train` (2 processes, local launcher, Petastorm readers sharded by rank) → test-set
figures of the epoch selected on dev (6,053 images held out of the official training set; test = the
official 10,000).

    python bench/quality_images.py [--rows resnet_small lenet5 ...]   (make quality-images)

Each row's settings are conf/recipes/<row>.yml (`lakedl train --conf` runs the same); this script adds
only where things go (work dir, run name).

Writes bench/results/quality_images.json and, per row, PNGs under bench/results/quality_images/: training
curves, the confusion matrix (classifiers), first-layer kernels and feature maps, the reconstruction grid
(autoencoders). The autoencoder rows also report a linear probe: logistic regression on the encoder's
codes of 10,000 training images, scored on the test set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import command_line, git_commit, recipe, recipe_settings, write_result  # bench/common.py

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "quality_images"
BENCH = ["train.progress=false", "train.log_every=200"]  # added to each recipe
ROWS = {  # name: bar on test accuracy or None; the settings are conf/recipes/<name>.yml
    "resnet_small": 0.92, "lenet5": None, "alexnet_small": None, "autoencoder": None, "autoencoder_denoise": None,
}

def dataset(work: Path) -> Path:
    """Fashion-MNIST as Petastorm shards (built once; `lakedl etl images` on the fetched idx files)."""
    from etl.core.runs import new_run_id
    from etl.core.spark import get_spark
    from etl.images.pipeline import run_image_etl
    from jobs.configs import load_config

    out = work / "shards" / "fashion_mnist"
    if not (out / "manifest.json").is_file():
        cfg = load_config("etl_images", REPO / "conf", overrides=[f"output.shards_dir={work / 'shards'}",
                                                                  f"paths.tables_dir={work / 'tables'}"])
        report = run_image_etl(cfg, get_spark(cfg.spark), new_run_id("etl-images"))
        print(f"ETL: kept {report.rows_kept} of {report.rows_read}, {report.rows_per_split}", flush=True)
    return out


def pictures(name: str, run_dir: Path, shards: Path) -> dict:
    """The row's PNGs (dl.viz.vision.run_pictures, renamed <row>_<picture>.png); for the autoencoders also
    the linear probe on the encoder's codes."""
    import numpy as np
    import torch

    from dl.models import rebuild
    from dl.viz.vision import first_images, run_pictures

    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "curves.png", OUT / f"{name}_curves.png")
    for kind, path in run_pictures(run_dir, OUT / name).items():
        shutil.move(path, OUT / f"{name}_{kind}.png")
    (OUT / name).rmdir()
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    if state["config"]["model"] != "autoencoder":
        return {}
    from sklearn.linear_model import LogisticRegression

    model = rebuild(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    (x_train, y_train), (x_test, y_test) = first_images(shards, "train", 10_000), first_images(shards, "test", 10_000)
    with torch.no_grad():
        codes_train, codes_test = model.encode(x_train).numpy(), model.encode(x_test).numpy()
    mu, sd = codes_train.mean(0), codes_train.std(0) + 1e-6
    probe = LogisticRegression(max_iter=2000).fit((codes_train - mu) / sd, y_train.numpy())
    accuracy = float(np.mean(probe.predict((codes_test - mu) / sd) == y_test.numpy()))
    return {"linear_probe_test_accuracy": round(accuracy, 4), "linear_probe_train_images": len(y_train)}


def main(argv: list[str] | None = None) -> None:
    from dl.train.job import run_train
    from jobs.configs import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "data" / "work" / "quality_images"))
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args(argv)
    work = Path(args.work)
    shards = dataset(work)
    previous = OUT.parent / "quality_images.json"
    results = {r["case"]: r for r in json.loads(previous.read_text())["results"]} if previous.is_file() else {}
    for name in args.rows:
        bar = ROWS[name]
        run_dir = work / "runs" / "train" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = load_config("train", REPO / "conf", [recipe(name)], overrides=[
            f"data.shards={shards}", f"paths.runs_dir={work / 'runs'}", f"run.name={name}", *BENCH])
        started = time.perf_counter()
        summary = run_train(cfg)
        wall = time.perf_counter() - started
        test, best = summary["test"], summary["best_epoch"]
        dev = json.loads((run_dir / "history.json").read_text())[best]
        # rows from several runs share this file: each records the commit it was measured at
        row = {"command": command_line(), "git_commit": git_commit(), "case": name, "dataset": "fashion_mnist",
               "model": cfg.model.name,
               "best_epoch": best + 1, "epochs_run": summary["epochs_run"], "wall_s": round(wall),
               "processes": summary["processes"], "recipe": f"conf/recipes/{name}.yml",
               "overrides": recipe_settings(name)}
        if cfg.train.task == "class":
            row.update({"test_accuracy": round(test["class_accuracy"], 4), "test_f1_macro": round(test["class_f1_macro"], 4),
                        "dev_accuracy": round(dev["dev_class_accuracy"], 4),
                        "train_accuracy": round(dev["train_class_accuracy"], 4), "test_examples": test["class_examples"]})
        else:
            row.update({k: round(v, 5) for k, v in test.items() if k.endswith("_mse")})
            row["test_examples"] = test["reconstruct_examples"]
            if "denoise_mse" in test:
                row["denoise_beats_noisy_input"] = test["denoise_mse"] < test["noisy_input_mse"]
        row.update(pictures(name, run_dir, shards))
        if bar is not None:
            row.update(bar=bar, meets_bar=row["test_accuracy"] >= bar)
        results[name] = row
        print(json.dumps(row), flush=True)
        write_result("quality_images", command_line(), list(results.values()))


if __name__ == "__main__":
    main()
