"""Image models trained by `lakedl train` on real Fashion-MNIST images: the image ETL's Petastorm shards →
2 processes (gloo) reading their own row groups → dev/test figures, a checkpoint that rebuilds the model
exactly, resume, the autoencoder's reconstruction and denoising figures, and refusals that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dl.train.job import TrainError, run_train
from dl.viz.vision import run_pictures
from etl.core.config import ConfigError
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("lakedl")), *args], capture_output=True, text=True,
                          cwd=REPO, check=False)
MEAN, STD = "data.augment.mean=0.286", "data.augment.std=0.353"


@pytest.fixture(scope="module")
def images(spark, tmp_path_factory, raw_data):
    """1,200 training and 300 test images of Fashion-MNIST through the image ETL (idx input)."""
    import gzip
    import struct

    from etl.images.pipeline import idx_array, run_image_etl

    tmp = tmp_path_factory.mktemp("imgtrain")
    src, folder = tmp / "idx", raw_data / "fashion_mnist"
    src.mkdir()
    for name, n in {"train-images-idx3-ubyte.gz": 1200, "train-labels-idx1-ubyte.gz": 1200,
                    "t10k-images-idx3-ubyte.gz": 300, "t10k-labels-idx1-ubyte.gz": 300}.items():
        array = idx_array(folder / name)[:n]
        with gzip.open(src / name, "wb") as fh:
            fh.write(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.tobytes())
    cfg = load_config("etl_images", REPO / "conf", overrides=[
        f"input.paths={json.dumps([str(src)])}", f"output.shards_dir={tmp / 'shards'}",
        f"paths.tables_dir={tmp / 'tables'}", "output.name=fm", "output.rows_per_file=150"])
    run_image_etl(cfg, spark, "t-imgtrain")
    return tmp / "shards" / "fm"


def train_config(shards: Path, runs: Path, name: str, *extra: str):
    return load_config("train", REPO / "conf", overrides=[
        f"data.shards={shards}", f"paths.runs_dir={runs}", f"run.name={name}", "train.progress=false",
        "launcher.num_processes=2", "train.batch_size=32", "data.loader_workers=1", *extra])


def test_lenet_trains_on_two_processes_and_its_checkpoint_rebuilds_it(images, tmp_path):
    from dl.data.image_loader import Augment, image_loader
    from dl.models import rebuild

    extra = ("model.name=lenet5", "train.task=class", MEAN, STD, "optim.lr=0.003", "data.augment.flip=true")
    summary = run_train(train_config(images, tmp_path, "lenet", "train.epochs=3", *extra))
    assert summary["processes"] == 2 and summary["weights_identical_across_ranks"]
    manifest = json.loads((images / "manifest.json").read_text())
    per_rank = -(-manifest["rows_per_split"]["train"] // (2 * 32))
    assert summary["steps"] == 3 * per_rank  # the same step count on both ranks, every epoch
    history = json.loads((tmp_path / "train" / "lenet" / "history.json").read_text())
    assert history[-1]["dev_class_accuracy"] > history[0]["dev_class_accuracy"] - 0.05
    test = summary["test"]
    assert test["class_examples"] == 300 and test["class_accuracy"] > 0.55  # chance is 0.10
    assert np.asarray(test["class_confusion"]).sum() == 300

    # best.pt holds the selected epoch: rebuilt from its config alone it scores exactly the reported test accuracy
    state = torch.load(tmp_path / "train" / "lenet" / "best.pt", map_location="cpu", weights_only=True)
    assert state["config"]["model"] == "lenet5" and state["label_map"]["class"] == manifest["classes"]
    model = rebuild(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    right = 0
    with torch.no_grad(), image_loader((images / "test").as_uri(), 100, aug=Augment(mean=0.286, std=0.353),
                                       workers=1) as loader:
        for batch in loader:
            right += int((model(batch["image"]).argmax(1) == batch["label"].long()).sum())
    assert right / 300 == pytest.approx(test["class_accuracy"])

    resumed = run_train(train_config(images, tmp_path, "lenet", "train.epochs=4", "run.resume=true", *extra))
    assert resumed["epochs_run"] == 4 and resumed["steps"] == 4 * per_rank

    report = (tmp_path / "train" / "lenet" / "report.html").read_text()  # curves, confusion, worst images
    assert report.count("data:image/png;base64,") == 3 and "Worst-scored test images" in report
    assert "ankle boot" in report and (tmp_path / "train" / "lenet" / "worst.png").is_file()
    out = run(["viz", "images", "--run", str(tmp_path / "train" / "lenet"), "--out", str(tmp_path / "viz")])
    assert out.returncode == 0, out.stderr
    for kind in ("kernels", "feature_maps", "attributions", "confusion"):
        assert Image.open(tmp_path / "viz" / f"{kind}.png").size[0] > 200 and kind in out.stdout
    from dl.viz.vision import first_images, pixel_attributions  # which pixels drove each prediction

    pictured, _ = first_images(images, "test", 8, 0.286, 0.353)
    attr, predicted, errors = pixel_attributions(model, pictured, (0.0 - 0.286) / 0.353)
    assert attr.shape == pictured.shape and max(errors) <= 0.05, errors  # completeness within 5%
    black = (pictured - (0.0 - 0.286) / 0.353).abs() < 1e-5  # a pixel at the baseline's value gets ~nothing
    assert bool(black.any()) and float(attr[black].abs().max()) <= 1e-4 * float(attr.abs().max())


def test_denoising_autoencoder_on_the_native_loader_beats_the_noisy_input(images, tmp_path):
    summary = run_train(train_config(images, tmp_path, "ae", "model.name=autoencoder", "train.task=reconstruct",
                                     "model.autoencoder.noise_std=0.3", "model.autoencoder.width=16", "train.epochs=6",
                                     "train.batch_size=16", "optim.lr=0.003", "data.image_loader=native"))
    test = summary["test"]
    assert test["reconstruct_examples"] == 300
    assert 0.03 < test["noisy_input_mse"] < 0.09  # Gaussian noise of std 0.3, clipped to [0, 1]
    assert test["denoise_mse"] < test["noisy_input_mse"]  # the denoiser removes noise
    history = json.loads((tmp_path / "train" / "ae" / "history.json").read_text())
    assert history[-1]["dev_denoise_mse"] < history[0]["dev_denoise_mse"]
    assert "diagnosis" not in summary or summary["diagnosis"] is None  # no accuracy: no bias/variance verdict
    written = run_pictures(tmp_path / "train" / "ae", tmp_path / "viz", n=8)
    assert sorted(written) == ["kernels", "reconstructions"]
    assert Image.open(written["reconstructions"]).size[0] > 200
    with pytest.raises(FileNotFoundError, match="no best.pt or last.pt"):
        run_pictures(tmp_path)


@pytest.mark.parametrize("kind", ["torch_distributor", "horovod"])
def test_batch_norm_statistics_from_every_rank_end_in_one_model(images, spark, tmp_path, kind):
    """ResNet's batch norm running statistics: DDP no longer broadcasts rank 0's at every forward and Horovod
    never did; each rank updates them from its own batches and the loop averages them before evaluating, so
    both ranks evaluate, and end with, one model — the weights and the statistics identical on both."""
    from worker_settings import worker_settings  # tests/model/worker_settings.py

    from dl.engine.launch import launch
    from dl.train.worker import train_worker

    settings = worker_settings(images, model="resnet_small", model_options={"widths": [8, 16, 32], "blocks": 1},
                               task="class", epochs=1, batch_size=32, loader_workers=1, image_loader="native",
                               checkpoint_dir=str(tmp_path))
    result = launch(train_worker, settings, kind, 2, spark=spark)
    assert len(result["weights_sha256_by_rank"]) == 2 and len(set(result["weights_sha256_by_rank"])) == 1
    state = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)["model"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(bool(m.abs().sum() > 0) for m in means)  # updated from the batches, not the zeros


def test_image_and_text_mismatches_are_refused_with_what_to_do(images, tmp_path):
    with pytest.raises(ConfigError, match="set train.task=class"):
        load_config("train", REPO / "conf", overrides=["model.name=resnet_small"])
    with pytest.raises(ConfigError, match="for image models"):
        load_config("train", REPO / "conf", overrides=["model.name=rnn", "train.task=class"])
    with pytest.raises(ConfigError, match="data.length_buckets=8 sorts text rows"):
        load_config("train", REPO / "conf", overrides=["model.name=lenet5", "train.task=class", "data.length_buckets=8"])
    with pytest.raises(ConfigError, match="data.augment.mean=0"):
        load_config("train", REPO / "conf", overrides=["model.name=autoencoder", "train.task=reconstruct", MEAN])
    text = tmp_path / "text"
    for split in ("train", "dev"):
        (text / split).mkdir(parents=True)
        (text / split / "part-0.parquet").write_bytes(b"")
    (text / "manifest.json").write_text(json.dumps({"tokenizer": "word"}))
    with pytest.raises(TrainError, match="lakedl etl images"):
        run_train(train_config(text, tmp_path, "x", "model.name=lenet5", "train.task=class"))
    with pytest.raises(TrainError, match="lakedl etl text"):
        run_train(train_config(images, tmp_path, "y", "model.name=rnn"))


GAN = {"width": 8, "z_dim": 16, "conditional": True}


def gan_settings(images, checkpoint_dir, **kw):
    from worker_settings import worker_settings  # tests/model/worker_settings.py

    from dl.engine.optim import OptimSettings

    return worker_settings(images, model="dcgan", model_options=GAN, task="generate", batch_size=32,
                           loader_workers=1, image_loader="native", checkpoint_dir=str(checkpoint_dir),
                           optim=OptimSettings(name="adam", lr=2e-4, betas=(0.5, 0.999)), **kw)


@pytest.mark.parametrize("kind", ["torch_distributor", "horovod"])
def test_gan_steps_its_two_optimizers_in_turn_under_both_launchers(images, spark, tmp_path, kind):
    """The discriminator and the generator each have an optimizer and each step exchanges only that part's
    gradients; both ranks end with one model, and every parameter of each part took exactly one Adam step a
    step (a generator phase that left gradients on the discriminator would make Horovod refuse, or step it
    twice)."""
    from dl.engine.launch import launch
    from dl.train.worker import train_worker

    result = launch(train_worker, gan_settings(images, tmp_path, epochs=1), kind, 2, spark=spark)
    assert len(result["weights_sha256_by_rank"]) == 2 and len(set(result["weights_sha256_by_rank"])) == 1
    state = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert sorted(state["optimizer"]) == ["discriminator", "generator"]
    model = state["model"]
    for part in ("discriminator", "generator"):
        adam = state["optimizer"][part]["state"]
        n_params = sum(1 for k in model if k.startswith(part + ".") and "running_" not in k
                       and "num_batches" not in k)
        assert len(adam) == n_params and {int(s["step"]) for s in adam.values()} == {result["steps"]}
    history = result["history"][0]
    assert history["loss_discriminator"] > 0 and history["loss_generator"] > 0
    assert int(model["draws"]) == 2 * result["steps"]  # one noise draw per batch and phase
    # the epoch's grid: 8 samples of each of the 10 classes, a row each (28-pixel images, 2-pixel gaps, 2x)
    assert Image.open(tmp_path / "samples" / "epoch_001.png").size == (2 * (8 * 30 + 2), 2 * (10 * 30 + 2))


def test_gan_resumes_from_a_mid_epoch_checkpoint_exactly(images, tmp_path):
    """Both optimizers, both schedules and the noise stream come back: stopped mid-epoch and resumed, the GAN
    ends with the weights of an uninterrupted run."""
    from dl.train.worker import train_worker

    kw = dict(epochs=2, checkpoint_every=10)
    full = train_worker(gan_settings(images, tmp_path / "a", **kw))
    part = train_worker(gan_settings(images, tmp_path / "b", stop_after_steps=full["steps"] // 2 + 5, **kw))
    assert part["interrupted"]
    resumed = train_worker(gan_settings(images, tmp_path / "b", resume=True, **kw))
    assert resumed["steps"] == full["steps"] and resumed["weights_sha256"] == full["weights_sha256"]


def test_gan_with_a_judge_is_chosen_by_fid_and_samples_on_demand(images, tmp_path):
    """`lakedl train` of a conditional GAN judged by a LeNet trained on the same images: every epoch's dev figures
    have the Fréchet distance of the judge's features and the share of samples the judge puts in their class;
    the epoch kept is the lowest distance; the report shows samples; `lakedl sample` draws a class."""
    from dl.data.images import Judge
    from etl.core.errors import InputError

    judge = tmp_path / "train" / "judge"
    run_train(train_config(images, tmp_path, "judge", "model.name=lenet5", "train.task=class", MEAN, STD,
                           "train.epochs=2", "optim.lr=0.003"))
    summary = run_train(train_config(images, tmp_path, "gan", "model.name=dcgan", "train.task=generate",
                                     f"data.judge={judge}", "data.image_loader=native", "train.epochs=3",
                                     "optim.name=adam", "optim.lr=0.0005", "optim.betas=[0.5, 0.999]",
                                     *(f"model.dcgan.{k}={str(v).lower()}" for k, v in GAN.items())))
    history = json.loads((tmp_path / "train" / "gan" / "history.json").read_text())
    fids = [h["dev_fid"] for h in history]
    assert all(f > 0 for f in fids) and all(0 <= h["dev_class_agreement"] <= 1 for h in history)
    assert summary["best_epoch"] == int(np.argmin(fids))
    assert summary["test"]["generate_examples"] == 300 and summary["test"]["fid"] > 0
    report = (tmp_path / "train" / "gan" / "report.html").read_text()
    assert "<h2>Samples" in report and "ankle boot" in report
    out = run(["sample", "--run", str(tmp_path / "train" / "gan"), "--n", "16", "--class", "trouser",
               "--out", str(tmp_path / "trousers.png")])
    assert out.returncode == 0 and "16 samples (trouser)" in out.stdout, out.stderr
    assert Image.open(tmp_path / "trousers.png").size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))
    written = run_pictures(tmp_path / "train" / "gan", tmp_path / "viz")  # `lakedl viz images` on a GAN run
    assert sorted(written) == ["kernels", "samples"] and Image.open(written["samples"]).size[0] > 200
    out = run(["sample", "--run", str(tmp_path / "train" / "gan"), "--class", "hat"])
    assert out.returncode != 0 and "error: --class 'hat': one of t-shirt/top" in out.stderr
    with pytest.raises(InputError, match="trained on other classes"):
        Judge(judge, ["cat", "dog"], 1, 28, "cpu")
    with pytest.raises(ConfigError, match="data.judge scores a GAN"):
        load_config("train", REPO / "conf", overrides=["model.name=lenet5", "train.task=class", f"data.judge={judge}"])
    with pytest.raises(ConfigError, match="the GAN generates pixels in \\[0, 1\\]"):
        load_config("train", REPO / "conf", overrides=["model.name=dcgan", "train.task=generate", MEAN])
    with pytest.raises(ConfigError, match="train.amp=fp16 is not supported for the GAN"):
        load_config("train", REPO / "conf", overrides=["model.name=dcgan", "train.task=generate", "train.amp=fp16"])
    with pytest.raises(TrainError, match="data.judge=.*: no best.pt or last.pt there"):
        run_train(train_config(images, tmp_path, "gan2", "model.name=dcgan", "train.task=generate",
                               f"data.judge={tmp_path / 'no_such_run'}"))
