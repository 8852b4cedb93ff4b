"""Image ETL on real Spark with real Fashion-MNIST images: idx files → Petastorm datasets read back
bit-exact by make_reader; a class-per-folder tree and a manifest with every class of bad image, each
quarantined with its reason and the counts reconciled exactly."""

from __future__ import annotations

import gzip
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etl.images.pipeline import ImageEtlError, ImageRules, decode_one, idx_array

REPO = Path(__file__).resolve().parents[2]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion(raw_data):
    folder = raw_data / "fashion_mnist"
    return (idx_array(folder / "train-images-idx3-ubyte.gz")[:400], idx_array(folder / "train-labels-idx1-ubyte.gz")[:400],
            idx_array(folder / "t10k-images-idx3-ubyte.gz")[:100], idx_array(folder / "t10k-labels-idx1-ubyte.gz")[:100])


def config(tmp_path: Path, fmt: str, paths: list[str], *extra: str):
    from jobs.configs import load_config

    return load_config("etl_images", REPO / "conf", overrides=[
        f"input.paths={json.dumps(paths)}", f"input.format={fmt}", f"output.shards_dir={tmp_path / 'shards'}",
        f"paths.tables_dir={tmp_path / 'tables'}", "output.name=imgs", *extra])


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 128, 255, 0)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def idx_shards(spark, tmp_path_factory, fashion):
    """The image ETL over 400 train + 100 test real Fashion-MNIST images written as idx files."""
    from etl.images.pipeline import run_image_etl

    tmp = tmp_path_factory.mktemp("idx")
    x_train, y_train, x_test, y_test = fashion
    src = tmp / "idx"
    src.mkdir()
    for name, arr in {"train-images-idx3-ubyte.gz": x_train, "train-labels-idx1-ubyte.gz": y_train,
                      "t10k-images-idx3-ubyte.gz": x_test, "t10k-labels-idx1-ubyte.gz": y_test}.items():
        write_idx(src / name, arr)
    return tmp, run_image_etl(config(tmp, "idx", [str(src)], "output.rows_per_file=25"), spark, "t-idx")


def test_idx_files_round_trip_bit_exact_through_petastorm(idx_shards, fashion):
    from petastorm import make_reader

    from etl.images.pipeline import FASHION_CLASSES

    tmp_path, report = idx_shards
    x_train, y_train, x_test, y_test = fashion
    assert report.rows_read == 500 == report.rows_kept and report.rows_quarantined == 0
    assert report.rows_per_split["test"] == 100 and report.rows_per_split["train"] + report.rows_per_split["dev"] == 400
    assert 20 <= report.rows_per_split["dev"] <= 70  # dev_from_train 0.1 of the given train split
    assert report.classes == FASHION_CLASSES and report.shape == [28, 28]
    seen = 0
    for split, (x, y) in {"train": (x_train, y_train), "dev": (x_train, y_train), "test": (x_test, y_test)}.items():
        url = (tmp_path / "shards" / "imgs" / split).as_uri()
        with make_reader(url, num_epochs=1, reader_pool_type="dummy") as reader:
            for row in reader:
                i = int(row.image_id.split("-")[1])
                assert row.image.dtype == np.uint8 and np.array_equal(row.image, x[i]) and row.label == y[i]
                seen += 1
    assert seen == 500
    manifest = json.loads((tmp_path / "shards" / "imgs" / "manifest.json").read_text())
    assert manifest["rows_per_split"] == report.rows_per_split and "CompressedImageCodec" in " ".join(manifest["schema"])


def test_loader_augments_without_touching_labels_and_shards_by_rank(idx_shards, fashion):
    from dl.data.image_loader import Augment, image_loader

    tmp_path, _ = idx_shards
    _, _, x_test, y_test = fashion
    url = (tmp_path / "shards" / "imgs" / "test").as_uri()
    aug = Augment(crop_padding=2, flip=True, mean=0.5, std=0.25)
    ids_by_rank = []
    for rank in (0, 1):
        with image_loader(url, 16, rank, 2, aug, train=True, seed=3, workers=1) as loader:
            ids = []
            for batch in loader:
                assert batch["image"].shape[1:] == (1, 28, 28) and batch["image"].dtype.is_floating_point
                for image_id, image, label in zip(batch["image_id"], batch["image"], batch["label"], strict=True):
                    i = int(image_id.split("-")[1])
                    assert int(label) == y_test[i]  # augmentation keeps the label
                    pixels = np.rint((image[0].numpy() * 0.25 + 0.5) * 255).astype(np.uint8)
                    padded = np.pad(x_test[i], 2)
                    candidates = [c for dy in range(5) for dx in range(5)
                                  for c in (padded[dy:dy + 28, dx:dx + 28], padded[dy:dy + 28, dx:dx + 28][:, ::-1])]
                    assert any(np.array_equal(pixels, c) for c in candidates)  # a shifted (flipped) original
                    ids.append(i)
        ids_by_rank.append(set(ids))
    assert not ids_by_rank[0] & ids_by_rank[1] and ids_by_rank[0] | ids_by_rank[1] == set(range(100))
    with image_loader(url, 50, aug=aug) as loader:  # evaluation: no augmentation, every image as stored
        for batch in loader:
            for image_id, image in zip(batch["image_id"], batch["image"], strict=True):
                i = int(image_id.split("-")[1])
                assert np.allclose(image[0].numpy(), (x_test[i] / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_every_bad_image_is_quarantined_with_its_reason(spark, tmp_path, fashion):
    from etl.core.tables import TableStore
    from etl.images.pipeline import run_image_etl

    x, y, _, _ = fashion
    root = tmp_path / "tree"
    for i in range(40):  # 40 good images in class folders named after their labels
        (root / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
        (root / f"c{y[i]}" / f"{i}.png").write_bytes(png(x[i]))
    good = png(x[0])
    bad = {
        "empty_file": b"",
        "undecodable": b"this is not an image at all" * 10,
        "truncated": good[: len(good) // 2],
        "wrong_mode": cmyk_jpeg(),  # print-shop colours: no faithful conversion to grey or RGB
        "too_large": png(np.zeros((1200, 1000), dtype=bool)),  # 1.2 MP of 1-bit pixels, a few hundred bytes
    }
    (root / "cbad").mkdir()
    for reason, content in bad.items():
        (root / "cbad" / f"{reason}.png").write_bytes(content)
    (root / "orphan.png").write_bytes(good)  # outside any class folder: no label
    # a manifest adds a row whose file is gone and one without a label
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"path": str(root / "c0" / "gone.png"), "label": "c0"},
        {"path": str(next((root / f"c{y[0]}").glob("*.png"))), "label": ""},
        {"path": str(next((root / f"c{y[1]}").glob("*.png"))), "label": f"c{y[1]}"}]) + "\n")
    store_cfg = config(tmp_path, "folder", [str(root)], "image.max_pixels=1000000", "validation.max_quarantine_rate=0.5")
    killed = tmp_path / "shards" / "imgs" / ".train.staging-0badc0de"  # what a killed run's split write leaves
    killed.mkdir(parents=True)
    report = run_image_etl(store_cfg, spark, "t-tree")
    assert not killed.exists() and not list((tmp_path / "shards" / "imgs").glob("manifest.json.tmp"))
    assert report.reasons == {reason: 1 for reason in [*bad, "missing_label"]}
    assert report.rows_read == 46 == report.rows_kept + report.rows_quarantined and report.rows_kept == 40
    assert set(report.classes) == {f"c{v}" for v in y[:40]}  # the bad folder's only files were all quarantined
    q = TableStore.from_config(store_cfg, spark).read("quarantine_imgs").toPandas()
    assert sorted(q["reason"]) == sorted([*bad, "missing_label"]) and all(q["run_id"] == "t-tree")
    assert q[q["reason"] == "missing_label"]["image_id"].tolist() == ["orphan.png"]
    kept_bytes = {r: c for r, c in zip(q["reason"], q["content"], strict=True)}
    assert bytes(kept_bytes["truncated"]) == bad["truncated"]  # the original bytes are kept for inspection

    m = run_image_etl(config(tmp_path, "manifest", [str(manifest)], "output.name=imgs_m",
                             "validation.max_quarantine_rate=0.9"), spark, "t-manifest")
    assert m.reasons == {"missing_file": 1, "missing_label": 1} and m.rows_read == 3 and m.rows_kept == 1


def test_too_many_bad_images_refuses_the_run_and_writes_no_dataset(spark, tmp_path, fashion):
    from etl.images.pipeline import run_image_etl

    x, _, _, _ = fashion
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(png(x[0]))
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageEtlError, match=r"1 of 2 images \(50.0%\) were quarantined.*'truncated': 1"):
        run_image_etl(config(tmp_path, "folder", [str(root)]), spark, "t-rate")
    assert not (tmp_path / "shards" / "imgs").exists()


def test_decode_converts_mode_and_resizes():
    rgb = png(np.full((10, 12, 3), 200, dtype=np.uint8))
    out = decode_one(rgb, "x", ImageRules(mode="L", height=6, width=5))
    assert out["reason"] is None and (out["height"], out["width"]) == (6, 5) and out["mode"] == "RGB"
    assert Image.open(io.BytesIO(out["png"])).mode == "L"


def test_bad_image_config_is_refused():
    from etl.core.config import ConfigError
    from jobs.configs import load_config

    with pytest.raises(ConfigError, match="image.height and image.width go together"):
        load_config("etl_images", REPO / "conf", overrides=["image.height=32"])


def test_native_loader_reads_what_petastorm_reads_and_shards_by_rank(idx_shards, fashion):
    from torch.utils.data import DataLoader

    from dl.data.image_loader import Augment, NativeImageDataset, image_loader

    tmp_path, _ = idx_shards
    root = tmp_path / "shards" / "imgs" / "test"
    aug = Augment(crop_padding=2, flip=True, mean=0.5, std=0.25)

    def rows(batches):
        return sorted((int(label), image.numpy().tobytes()) for b in batches
                      for image, label in zip(b["image"], b["label"], strict=True))

    native = rows(NativeImageDataset(str(root), 32, aug=aug))  # evaluation: normalised, not augmented
    with image_loader(root.as_uri(), 32, aug=aug, workers=1) as loader:
        assert native == rows(loader) and len(native) == 100
    counts = []
    for rank in (0, 1):  # training: augmented, each rank its own row groups, labels kept
        ds = NativeImageDataset(str(root), 16, rank, 2, aug, train=True, seed=3)
        ds.set_epoch(1)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert all(b["image"].shape[1:] == (1, 28, 28) for b in batches)
        counts.append(np.bincount(np.concatenate([b["label"].numpy() for b in batches]), minlength=10))
    _, _, _, y_test = fashion
    assert (counts[0] + counts[1]).tolist() == np.bincount(y_test[:100], minlength=10).tolist()
    assert counts[0].sum() > 0 and counts[1].sum() > 0


def test_two_image_runs_at_once_each_record_their_run_and_leave_one_whole_dataset(spark, tmp_path, fashion):
    # two `lakedl etl images` processes on the same tree and dataset name at once (a scheduler starting a job
    # while the last one still runs): both finish, each appends its own etl_runs row (stage images) with counts
    # that reconcile, and the dataset is the one both wrote in turn under its lock: every image exactly once
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from etl.core.tables import TableStore

    x, y, _, _ = fashion
    root = tmp_path / "tree"
    for i in range(60):
        (root / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
        (root / f"c{y[i]}" / f"{i}.png").write_bytes(png(x[i]))
    (root / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    sets = [arg for s in (f"output.shards_dir={tmp_path / 'shards'}", f"paths.tables_dir={tmp_path / 'tables'}",
                          "spark.master=local[1]", "validation.max_quarantine_rate=0.1") for arg in ("--set", s)]
    command = [str(Path(sys.executable).parent / "lakedl"), "etl", "images", "--input", str(root), "--format",
               "folder", "--name", "imgs", *sets]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert all((r["rows_read"], r["rows_kept"], r["rows_quarantined"]) == (61, 60, 1) for r in reports)
    runs = TableStore(tmp_path / "tables", spark).read("etl_runs").toPandas()
    assert sorted(runs["run_id"]) == sorted(r["run_id"] for r in reports)
    assert set(runs["stage"]) == {"images"} and set(runs["status"]) == {"succeeded"}
    assert (runs["rows_read"] == runs["rows_kept"] + runs["rows_quarantined"]).all()
    out = tmp_path / "shards" / "imgs"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] in {r["run_id"] for r in reports} and sum(manifest["rows_per_split"].values()) == 60
    ids = [i for split in ("train", "dev", "test") for f in sorted((out / split).glob("*.parquet"))
           for i in pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 60
    assert not list(out.glob("manifest.json.tmp")) and not list(out.glob(".*staging*"))


def test_writing_petastorm_metadata_warns_nothing(spark, idx_shards):
    # `make demo` prints no warning line: petastorm's helpers use pyarrow's legacy ParquetDataset, whose
    # FutureWarnings are filtered where we call them (written again here over the fixture's own metadata);
    # without that filter this test sees the use_legacy_dataset / ParquetDataset.pieces deprecations
    import warnings

    from etl.core.logs import quiet_known_warnings
    from etl.images.pipeline import _petastorm_metadata, image_schema

    tmp, _ = idx_shards
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_warnings()  # what the CLI sets up; the rest would reach the user
        _petastorm_metadata(spark, tmp / "shards" / "imgs" / "train", image_schema(28, 28, "L"))
    assert [str(w.message) for w in seen if issubclass(w.category, FutureWarning)] == []
