"""Image ETL: image sets → decoded, validated, normalised images → one Petastorm dataset per split.

read (class-per-folder trees through Spark's ``binaryFile`` source, MNIST-style idx files, Parquet or
JSON-lines manifests of path-or-bytes and label) → decode and validate in Spark with Pillow (every bad
image quarantined with a reason) → convert to the configured mode and size → split → Petastorm datasets
``<shards_dir>/<name>/<split>/`` (Unischema: ``image_id``, ``image`` through ``CompressedImageCodec('png')``,
``label``) that ``petastorm.make_reader`` reads, plus ``manifest.json`` and a ``quarantine_<name>`` Delta
table. Rows read = rows kept + rows quarantined, exactly, and the run's counts say so.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.core import catalog
from etl.core.errors import LakedlError
from etl.core.lease import file_lock
from etl.core.logs import get_logger
from etl.core.runs import ETL_RUNS, ETL_RUNS_SCHEMA, EtlReport, Tally, new_run_id, quarantine, recorded_run
from etl.core.spark import spill
from etl.core.tables import local_path, remove_leftovers, swapped_in

log = get_logger(__name__)

FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
IDX_SPLITS = {"train": "train", "t10k": "test"}  # idx file prefix → split
RAW_SCHEMA = T.StructType([T.StructField("image_id", T.StringType()), T.StructField("content", T.BinaryType()),
                           T.StructField("label", T.StringType()), T.StructField("split", T.StringType()),
                           T.StructField("source_file", T.StringType())])
DECODED_SCHEMA = T.StructType([*RAW_SCHEMA.fields[:1], *RAW_SCHEMA.fields[2:],
                               T.StructField("bad_content", T.BinaryType()),  # a quarantined image's bytes
                               T.StructField("png", T.BinaryType()), T.StructField("height", T.IntegerType()),
                               T.StructField("width", T.IntegerType()), T.StructField("mode", T.StringType()),
                               T.StructField("bytes", T.LongType()), T.StructField("reason", T.StringType()),
                               T.StructField("detail", T.StringType())])
QUARANTINE_CONTENT_MAX = 1 << 20  # bad images up to 1 MiB keep their bytes in the quarantine table


class ImageEtlError(LakedlError, RuntimeError):
    """The run was refused or too much was quarantined; the message says what to do."""


# ------------------------------------------------------------------------------------------------
# Readers: every one returns RAW_SCHEMA rows
# ------------------------------------------------------------------------------------------------
def idx_array(path: str | Path) -> np.ndarray:
    """An MNIST-style idx file (gzip or plain): ``uint8`` array of the shape its header gives."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ImageEtlError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ImageEtlError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but {body.size} follow")
    return body.reshape(shape)


def idx_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(split, images file, labels file) for each ``<prefix>-images-idx3-ubyte[.gz]`` in ``folder``."""
    pairs = []
    for images in sorted(Path(folder).glob("*-images-idx3-ubyte*")):
        prefix = images.name.split("-images-")[0]
        labels = next(Path(folder).glob(f"{prefix}-labels-idx1-ubyte*"), None)
        if labels is None:
            raise ImageEtlError(f"{images} has no {prefix}-labels-idx1-ubyte file beside it")
        pairs.append((IDX_SPLITS.get(prefix, prefix), images, labels))
    if not pairs:
        raise ImageEtlError(f"{folder}: no *-images-idx3-ubyte[.gz] files (run `lakedl data fetch --source "
                            "fashion_mnist`)")
    return pairs


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def read_idx(spark: SparkSession, folder: str, partitions: int = 8) -> DataFrame:
    """MNIST-style idx pairs as rows: each image PNG-encoded in Spark tasks (each task decompresses the
    file and encodes its own range of images); the split comes from the file name (train, t10k → test)."""
    frames = []
    for split, images, labels in idx_pairs(folder):
        y = idx_array(labels)
        n = len(y)

        def encode(batches: Iterator[pd.DataFrame], images=str(images), labels=y, split=split) -> Iterator[pd.DataFrame]:
            x = None
            for batch in batches:
                if x is None:
                    x = idx_array(images)
                idx = batch["id"].to_numpy()
                yield pd.DataFrame({"image_id": [f"{split}-{i:06d}" for i in idx],
                                    "content": [_png(x[i]) for i in idx], "label": [str(int(labels[i])) for i in idx],
                                    "split": split, "source_file": images})

        frames.append(spark.range(0, n, numPartitions=max(1, min(partitions, n))).mapInPandas(encode, RAW_SCHEMA))
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def empty_files(spark: SparkSession, root: str) -> list[str]:
    """The zero-byte files under ``root`` (URIs), which Spark's file sources skip without a word
    (SPARK-26161): listed here so that they are quarantined, not lost. Local paths are walked in Python;
    other file systems are listed through Hadoop's FileSystem API on the driver (one call per file), or with
    pyarrow's file systems from a Spark Connect client, which has no JVM."""
    from urllib.parse import urlparse

    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        local = Path(parsed.path if parsed.scheme else root).absolute()
        return [(Path(d) / f).as_uri() for d, dirs, files in os.walk(local)
                for f in files if not f.startswith((".", "_")) and (Path(d) / f).stat().st_size == 0]
    from etl.core.spark import is_connect

    if is_connect(spark):  # no JVM here: listed with pyarrow's file systems, as delta-rs reaches the tables
        import pyarrow.fs as pafs

        fs, base = pafs.FileSystem.from_uri(root)
        scheme = parsed.scheme + "://" if parsed.scheme else ""
        return [scheme + info.path for info in fs.get_file_info(pafs.FileSelector(base, recursive=True))
                if info.type == pafs.FileType.File and info.size == 0 and not info.base_name.startswith((".", "_"))]
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(root)
    files = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listFiles(path, True)
    out = []
    while files.hasNext():
        status = files.next()
        if status.getLen() == 0 and not status.getPath().getName().startswith((".", "_")):
            out.append(status.getPath().toString())
    return out


def read_folder(spark: SparkSession, root: str) -> DataFrame:
    """A class-per-folder tree (``root/<class>/<file>``) through Spark's ``binaryFile`` source: the label is
    the parent folder's name, the id the path below ``root``; no split (hash-assigned later). Zero-byte
    files, which the source skips, are added back with empty content. Hidden files (``.*``, ``_*``) are
    not images and are skipped, as Spark does."""
    base = Path(root).absolute()
    df = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(base))
    empty = empty_files(spark, str(base))
    if empty:
        df = df.select("path", "content").unionByName(
            spark.createDataFrame([(p, bytearray()) for p in empty], "path string, content binary"))
    rel = F.regexp_replace(F.col("path"), f"^file:(//)?\\Q{base}\\E/", "")  # the root taken literally
    return df.select(rel.alias("image_id"), "content", F.try_element_at(F.split(rel, "/"), F.lit(-2)).alias("label"),
                     F.lit(None).cast("string").alias("split"), F.col("path").alias("source_file"))


def read_manifest(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Parquet or JSON-lines manifests with ``label`` and ``path`` (a local file) or ``bytes``; optional
    ``image_id`` (default: the path, or a hash of the bytes) and ``split``. A missing file is read as
    null content (quarantined as ``missing_file``)."""
    parquet = [p for p in paths if p.endswith(".parquet")]
    other = [p for p in paths if not p.endswith(".parquet")]
    frames = ([spark.read.parquet(*parquet)] if parquet else []) + ([spark.read.json(other)] if other else [])
    out = None
    for df in frames:
        cols = set(df.columns)
        if "label" not in cols or not ({"path", "bytes"} & cols):
            raise ImageEtlError(f"image manifest needs a label column and a path or bytes column; has {sorted(cols)}")
        path = F.col("path") if "path" in cols else F.lit(None).cast("string")
        content = F.col("bytes").cast("binary") if "bytes" in cols else F.lit(None).cast("binary")
        image_id = F.col("image_id") if "image_id" in cols else F.coalesce(path, F.sha2(content, 256))
        split = F.col("split") if "split" in cols else F.lit(None).cast("string")
        df = df.select(image_id.cast("string").alias("image_id"), content.alias("content"), path.alias("_path"),
                       F.col("label").cast("string").alias("label"), split.alias("split"),
                       F.coalesce(path, F.lit("<manifest bytes>")).alias("source_file"))
        out = df if out is None else out.unionByName(df)

    def load(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            contents = []
            for content, path in zip(batch["content"], batch["_path"], strict=True):
                if content is None and isinstance(path, str):
                    try:
                        content = Path(path.removeprefix("file:")).read_bytes()
                    except OSError:
                        content = None
                contents.append(content)
            batch = batch.assign(content=contents)
            yield batch[[f.name for f in RAW_SCHEMA.fields]]

    return out.mapInPandas(load, RAW_SCHEMA)


# ------------------------------------------------------------------------------------------------
# Decode and validate
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRules:
    mode: str = "L"  # L (grey) | RGB
    height: int | None = None  # resize to height x width (both or neither)
    width: int | None = None
    max_pixels: int = 40_000_000
    accept_modes: tuple[str, ...] = ("1", "L", "LA", "P", "RGB", "RGBA")


def decode_one(content: bytes | None, label: str | None, rules: ImageRules) -> dict:
    """Decode, check and normalise one image: PNG bytes in ``rules.mode`` (resized when asked), or a
    ``reason``: missing_file, empty_file, missing_label, undecodable, truncated, too_large, wrong_mode."""
    from PIL import Image, UnidentifiedImageError

    out = {"png": None, "height": None, "width": None, "mode": None, "bytes": None if content is None else len(content),
           "reason": None, "detail": None}
    if content is None:
        return {**out, "reason": "missing_file"}
    if len(content) == 0:
        return {**out, "reason": "empty_file"}
    if label is None or str(label).strip() == "":
        return {**out, "reason": "missing_label"}
    try:
        with Image.open(io.BytesIO(content)) as probe:  # header only: size and mode before any pixel
            width, height, mode = probe.width, probe.height, probe.mode
        out.update(width=width, height=height, mode=mode)
        if width * height > rules.max_pixels:
            return {**out, "reason": "too_large", "detail": f"{width}x{height} > max_pixels {rules.max_pixels}"}
        if mode not in rules.accept_modes:
            return {**out, "reason": "wrong_mode", "detail": f"mode {mode} not in {list(rules.accept_modes)}"}
        with Image.open(io.BytesIO(content)) as img:
            img.load()
            img = img.convert(rules.mode)
            if rules.height and rules.width and (img.height, img.width) != (rules.height, rules.width):
                img = img.resize((rules.width, rules.height), Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
        return {**out, "png": buf.getvalue(), "height": img.height, "width": img.width}
    except Image.DecompressionBombError as exc:
        return {**out, "reason": "too_large", "detail": str(exc)[:200]}
    except UnidentifiedImageError as exc:
        return {**out, "reason": "undecodable", "detail": str(exc)[:200]}
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow: "image file is truncated", bad chunks, CRC errors
        reason = "truncated" if "truncat" in str(exc).lower() else "undecodable"
        return {**out, "reason": reason, "detail": f"{type(exc).__name__}: {exc}"[:200]}


def decode_frame(df: DataFrame, rules: ImageRules) -> DataFrame:
    """``decode_one`` over every row in Spark (Pillow in the Python workers). A quarantined image keeps its
    original bytes (``bad_content``) when they are at most 1 MiB."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import warnings

        from PIL import Image

        Image.MAX_IMAGE_PIXELS = rules.max_pixels  # Pillow's own bomb check at our limit (it errors at 2x) ...
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ... and our size check reports it
        for batch in batches:
            rows = [decode_one(c, lbl, rules) for c, lbl in zip(batch["content"], batch["label"], strict=True)]
            decoded = pd.DataFrame(rows, columns=["png", "height", "width", "mode", "bytes", "reason", "detail"])
            bad = [c if r["reason"] and c is not None and len(c) <= QUARANTINE_CONTENT_MAX else None
                   for c, r in zip(batch["content"], rows, strict=True)]
            yield pd.concat([batch.drop(columns=["content"]).reset_index(drop=True),
                             pd.DataFrame({"bad_content": bad}), decoded], axis=1)
    return df.mapInPandas(run, DECODED_SCHEMA)


# ------------------------------------------------------------------------------------------------
# Petastorm datasets
# ------------------------------------------------------------------------------------------------
def image_schema(height: int | None, width: int | None, mode: str):
    """The datasets' Unischema: ``image_id`` (string), ``image`` (uint8, PNG-compressed), ``label`` (int32)."""
    from petastorm.codecs import CompressedImageCodec, ScalarCodec
    from petastorm.unischema import Unischema, UnischemaField

    shape = (height, width) if mode == "L" else (height, width, 3)
    return Unischema("ImageSchema", [
        UnischemaField("image_id", np.str_, (), ScalarCodec(T.StringType()), False),
        UnischemaField("image", np.uint8, shape, CompressedImageCodec("png"), False),
        UnischemaField("label", np.int32, (), ScalarCodec(T.IntegerType()), False),
    ])


def write_petastorm(spark: SparkSession, rows: DataFrame, url: str, schema, row_group_mb: int,
                    rows_per_file: int | None = None) -> None:
    """Write ``rows`` (image_id, image = PNG bytes, label) as a Petastorm dataset at ``url``. The PNG bytes
    are already what ``CompressedImageCodec('png')`` stores (cv2 and Pillow write the same standard PNG),
    so they are not decoded and re-encoded on the way.

    What ``petastorm.etl.dataset_metadata.materialize_dataset`` does, without a SparkContext (so that it runs
    through Spark Connect as well): the row-group size is a Parquet writer option instead of a change to the
    session's Hadoop configuration, the row groups of each file are counted by a DataFrame task instead of
    an RDD, and the Unischema and those counts go into ``_common_metadata`` with petastorm's own helpers, so
    ``make_reader`` reads the result exactly as it reads a dataset petastorm wrote."""
    # written beside the split and swapped in: a failed or killed run leaves the previous split whole
    with swapped_in(local_path(url)) as staging:
        writer = (rows.select("image_id", "image", F.col("label").cast("int")).write.mode("error")
                  .option("parquet.block.size", row_group_mb * 1024 * 1024)
                  .option("parquet.block.size.row.check.min", 3)  # petastorm's: small rows fill a group too
                  .option("parquet.row-group.size.row.check.min", 3)
                  .option("parquet.summary.metadata.level", "NONE"))
        if rows_per_file:
            writer = writer.option("maxRecordsPerFile", rows_per_file)
        writer.parquet(staging.as_uri())
        _petastorm_metadata(spark, staging, schema)


def _row_groups(batches):
    import pandas as pd
    import pyarrow.parquet as pq

    for batch in batches:
        yield pd.DataFrame({"path": batch["path"],
                            "row_groups": [pq.ParquetFile(p).metadata.num_row_groups for p in batch["path"]]})


def _petastorm_metadata(spark: SparkSession, root: Path, schema) -> None:
    """``_common_metadata`` for the Parquet files under ``root``: the Unischema and each file's row-group count
    (petastorm's ``dataset-toolkit.num_row_groups_per_file.v1``), counted on the executors."""
    import warnings

    with warnings.catch_warnings():  # petastorm's helpers take pyarrow's legacy ParquetDataset: its deprecations
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(use_legacy_dataset|pieces)")
        _write_petastorm_metadata(spark, root, schema)


def _write_petastorm_metadata(spark: SparkSession, root: Path, schema) -> None:
    import pyarrow.parquet as pq
    from petastorm import utils
    from petastorm.etl.dataset_metadata import ROW_GROUPS_PER_FILE_KEY, _generate_unischema_metadata, load_row_groups
    from petastorm.fs_utils import FilesystemResolver

    resolver = FilesystemResolver(root.as_uri())
    dataset = pq.ParquetDataset(resolver.get_dataset_path(), filesystem=resolver.filesystem(), validate_schema=False)
    _generate_unischema_metadata(dataset, schema)
    paths = sorted(piece.path for piece in dataset.pieces)
    counted = (spark.createDataFrame([(p,) for p in paths], "path string").repartition(min(len(paths), 64))
               .mapInPandas(_row_groups, "path string, row_groups long").collect())
    counts = {os.path.relpath(r.path, dataset.paths): int(r.row_groups) for r in counted}
    utils.add_to_dataset_metadata(dataset, ROW_GROUPS_PER_FILE_KEY, json.dumps(counts))
    load_row_groups(pq.ParquetDataset(resolver.get_dataset_path(), filesystem=resolver.filesystem(),
                                      validate_schema=False))  # raises if the metadata is not readable back


@dataclass
class ImageEtlReport(EtlReport):
    classes: list[str] = field(default_factory=list)
    shape: list[int | None] = field(default_factory=list)


def image_split(df: DataFrame, split) -> DataFrame:
    """A row's own split when it has one (idx files: train/test), with ``split.dev_from_train`` of the given
    train rows moved to dev; rows without one by a hash of ``image_id`` (``split.train``/``split.dev``/rest
    test). Deterministic: the same image always lands in the same split."""
    from etl.core.splits import hashed_split, split_bucket

    bucket = split_bucket("image_id", split.seed)
    hashed = hashed_split(bucket, split.train, split.dev)
    given = F.col("split").isin("train", "dev", "test")
    return df.withColumn("split", F.when(given & (F.col("split") == "train") & (bucket < split.dev_from_train), "dev")
                                   .when(given, F.col("split")).otherwise(hashed))


def class_names(labels: list[str], fmt: str) -> list[str]:
    """The label index → class name list: Fashion-MNIST's names for idx input, else the labels sorted
    (numerically when they are all integers, so "0".."9" keep their values)."""
    if fmt == "idx":
        return FASHION_CLASSES if set(labels) <= {str(i) for i in range(10)} else sorted(labels, key=int)
    if all(lbl.lstrip("-").isdigit() for lbl in labels):
        return [str(i) for i in range(max(int(lbl) for lbl in labels) + 1)]
    return sorted(labels)


def run_image_etl(cfg, spark: SparkSession, run_id: str) -> ImageEtlReport:
    """One run of the image ETL (``etl_images`` config); see the module docstring."""
    from etl.core.io import check_paths
    from etl.core.tables import TableStore

    started = time.time()
    name, i = cfg.output.name, cfg.input
    check_paths(i.paths, "input.paths")
    if i.format == "idx":
        if len(i.paths) != 1:
            raise ImageEtlError("input.format=idx takes one folder in input.paths (with *-images-idx3-ubyte[.gz])")
        raw = read_idx(spark, i.paths[0])
    elif i.format == "folder":
        raw = read_folder(spark, i.paths[0])
        for extra in i.paths[1:]:
            raw = raw.unionByName(read_folder(spark, extra))
    else:
        raw = read_manifest(spark, list(i.paths))
    img = cfg.image
    rules = ImageRules(img.mode, img.height, img.width, img.max_pixels, tuple(img.accept_modes))
    store = TableStore.from_config(cfg, spark)
    store.check_names(catalog.quarantine(name), ETL_RUNS)
    decoded = spill(decode_frame(raw, rules))
    report = ImageEtlReport(run_id, name)
    record: dict = {}
    try:
        with recorded_run(store, ETL_RUNS, record, ETL_RUNS_SCHEMA):
            try:
                return _run(cfg, spark, store, decoded, report)
            finally:
                record.update(report.record("images"))
    finally:
        decoded.unpersist()
        report.seconds = round(time.time() - started, 2)
        log.info("image etl", extra={k: v for k, v in asdict(report).items() if k not in ("reasons", "classes")})


def _run(cfg, spark: SparkSession, store, decoded: DataFrame, report: ImageEtlReport) -> ImageEtlReport:
    """Quarantine, reconcile, split and write the datasets; fills ``report`` as it goes."""
    name, i, img, run_id = cfg.output.name, cfg.input, cfg.image, report.run_id
    tally = Tally.of({(r["reason"], False): r["count"] for r in decoded.groupBy("reason").count().collect()})
    report.reconcile(tally)
    read, quarantined, reasons = tally.read, tally.quarantined, tally.reasons
    if quarantined:
        bad = (decoded.filter(F.col("reason").isNotNull())
               .select(F.sha2(F.concat_ws("\u0001", "source_file", "image_id"), 256).alias("quarantine_key"),
                       "image_id", "label", "split", "source_file", "reason", "detail", "bytes",
                       F.col("bad_content").alias("content")))
        quarantine(store, catalog.quarantine(name), bad, run_id)
    rate = tally.rate
    if rate > cfg.validation.max_quarantine_rate:
        report.status = "failed_quarantine_rate"
        raise ImageEtlError(f"{quarantined} of {read} images ({rate:.1%}) were quarantined, above "
                            f"validation.max_quarantine_rate={cfg.validation.max_quarantine_rate:.1%}; reasons: "
                            f"{reasons}. Nothing was written; see `lakedl tables show quarantine_{name}`")
    good = image_split(decoded.filter(F.col("reason").isNull()), cfg.split)
    # one pass for the class names, the image sizes and the split counts (a few rows)
    stats = good.groupBy("split", "label", "height", "width").count().collect()
    classes = class_names(sorted({r["label"] for r in stats}), i.format)
    shapes = {(r["height"], r["width"]) for r in stats}
    height, width = next(iter(shapes)) if len(shapes) == 1 else (None, None)
    counts = {s: sum(r["count"] for r in stats if r["split"] == s) for s in ("train", "dev", "test")}
    # idx labels are the indices themselves; other labels index into the class list
    index = {str(k): k for k in range(len(classes))} if i.format == "idx" else {c: k for k, c in enumerate(classes)}
    mapping = F.create_map(*[x for k, v in index.items() for x in (F.lit(k), F.lit(v))])
    good = good.withColumn("label", mapping[F.col("label")]).withColumnRenamed("png", "image")
    schema = image_schema(height, width, img.mode)
    out_dir = Path(cfg.output.shards_dir).absolute() / name
    report.rows_per_split = counts
    report.classes, report.shape = classes, [height, width] + ([] if img.mode == "L" else [3])
    report.shards_dir, report.status = str(out_dir), "succeeded"
    manifest = {**asdict(report), "mode": img.mode, "format": i.format, "inputs": list(i.paths),
                "schema": [f"{f.name}: {f.numpy_dtype.__name__} {f.shape} {type(f.codec).__name__}"
                           for f in schema.fields.values()]}
    with file_lock(out_dir / ".lock"):  # two runs at once write the dataset one after the other
        remove_leftovers(out_dir)
        for split in ("train", "dev", "test"):
            if counts[split]:
                write_petastorm(spark, good.filter(F.col("split") == split).orderBy("image_id"),
                                (out_dir / split).as_uri(), schema, cfg.output.row_group_mb,
                                cfg.output.rows_per_file)
        tmp = out_dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(out_dir / "manifest.json")  # whole or absent, never half-written
    return report


def run_etl_images(cfg, spark=None) -> dict:
    """The image ETL as a job: one run id, a Spark job description, a plain-dict report."""
    from etl.core.spark import get_spark, job_description

    spark = spark or get_spark(cfg.spark)
    run_id = new_run_id("etl-images")
    with job_description(spark, f"lakedl etl images {run_id}"):
        return asdict(run_image_etl(cfg, spark, run_id))
