"""Text ETL: raw review corpora → validated, tokenized, encoded silver table and Parquet shards.

read → validate (quarantine with a reason) → skip reviews already in silver → split → normalize →
tokenize/encode (vocabulary from the training split) → MERGE new rows into ``silver_<name>`` → rewrite
the shards ``<shards_dir>/<name>/<split>/`` from silver → manifest. Every run appends one
reconciliation row to ``etl_runs``: rows read = kept + quarantined + already present, exactly.

Concurrent runs into one dataset are safe (docs/reliability.md): the silver MERGE is recomputed when
another run committed first, so each review is inserted once and each run reports what it really
inserted (rows another run inserted meanwhile count as already present); the tokenizer is built and the
shards are rewritten under the dataset's lock file, the shards always from one silver version, which the
manifest names. A run that fails for any reason records a ``failed`` row with the error.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from etl.config import TextEtlConfig
from etl.lease import file_lock
from etl.logs import get_logger
from etl.readers import MALFORMED, read_input
from etl.tables import TableStore, remove_leftovers
from etl.textprep import (Normalizer, TextTokenizer, build_word_vocab, encode_frame, load_minilm, train_subword,
                          word_tokens_udf)
from etl.validate import REASON, validate

log = get_logger(__name__)

SHARD_COLUMNS = ("review_id", "ids", "length", "input_ids", "sentiment", "sentiment_mask", "rating", "rating_mask",
                 "rating_reg", "split")
RUNS_TABLE = "etl_runs"


class QuarantineRateError(RuntimeError):
    """Too many rows were quarantined: the run commits only the quarantine and its run record."""


class ShardsError(RuntimeError):
    """The shards cannot be brought up to date with the silver table."""


class EtlRunFailed(RuntimeError):
    """A run failed for a reason outside the input (a concurrent-commit conflict, a full disk, a Spark
    error); its ``failed`` row is in ``etl_runs``. The message is one line: the cause and what to do."""


@dataclass
class TextEtlReport:
    run_id: str
    dataset: str
    status: str
    rows_read: int
    rows_kept: int
    rows_quarantined: int
    rows_already_present: int
    quarantine_rate: float
    reasons: dict[str, int] = field(default_factory=dict)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    tokenizer: str = ""
    tokenizer_sha256: str = ""
    silver_version: int | None = None
    shards_dir: str = ""
    seconds: float = 0.0
    error: str | None = None


def split_bucket(id_col: str, seed: int) -> Column:
    """A row's place in [0, 1) from a seeded hash of its id: the same id always lands in the same place."""
    return (F.xxhash64(F.col(id_col), F.lit(seed)) % 10_000 + 10_000) % 10_000 / 10_000.0


def hashed_split(bucket: Column, train: float, dev: float) -> Column:
    """train below ``train``, dev in the next ``dev``, test for the rest."""
    return F.when(bucket < train, "train").when(bucket < train + dev, "dev").otherwise("test")


def assign_split(df: DataFrame, mode: str, train: float, dev: float, seed: int) -> DataFrame:
    """Deterministic split by a hash of review_id (``hash``), the dataset's own ``split`` (``given``),
    or the row's own split when it has a valid one and the hash otherwise (``auto``)."""
    if mode == "given":
        return df
    hashed = hashed_split(split_bucket("review_id", seed), train, dev)
    if mode == "auto":
        hashed = F.when(F.col("split").isin("train", "dev", "test"), F.col("split")).otherwise(hashed)
    return df.withColumn("split", hashed)


def with_targets(df: DataFrame) -> DataFrame:
    """Training targets with masks where a label is missing: binary ``sentiment``, 5-class ``rating``
    (stars - 1) and ``rating_reg`` (stars as a float)."""
    return (df.withColumn("sentiment_mask", F.col("label").isNotNull().cast("byte"))
              .withColumn("sentiment", F.coalesce(F.col("label"), F.lit(0)).cast("byte"))
              .withColumn("rating_mask", F.col("stars").isNotNull().cast("byte"))
              .withColumn("rating", F.coalesce(F.round(F.col("stars")) - 1, F.lit(0)).cast("byte"))
              .withColumn("rating_reg", F.coalesce(F.col("stars"), F.lit(0.0)).cast("float")))


def _tokenizer(cfg: TextEtlConfig, train: DataFrame, artifact: Path) -> TextTokenizer:
    """The dataset's pinned tokenizer artifact, or a new one built from the training split's text."""
    t = cfg.tokenize
    if artifact.is_file() and not t.rebuild_vocab:
        existing = TextTokenizer.load(artifact)
        if existing.kind == t.kind:
            log.info("reusing tokenizer", extra={"kind": t.kind, "sha256": existing.sha256[:12]})
            return existing
    train_text = train.select("review_id", Normalizer.from_settings(cfg.normalize).column("text").alias("text_norm"))
    if t.kind == "minilm":
        tok = load_minilm(t.subword.minilm_dir)
    elif t.kind == "word":
        tok = build_word_vocab(train_text.select(word_tokens_udf("text_norm").alias("tokens")),
                               t.vocab.min_count, t.vocab.max_size)
    else:  # stream a deterministic sample of the training text to the trainer (not a collect)
        sample = train_text.orderBy("review_id").limit(t.subword.sample_rows)
        tok = train_subword((r["text_norm"] for r in sample.toLocalIterator()), t.kind, t.subword.vocab_size)
    tok.save(artifact)
    log.info("built tokenizer", extra={"kind": t.kind, "size": tok.vocab_size, "sha256": tok.sha256[:12]})
    return tok


def run_text_etl(cfg: TextEtlConfig, spark: SparkSession, run_id: str) -> TextEtlReport:
    """One incremental run of the text ETL; see the module docstring."""
    started = time.time()
    name = cfg.output.name
    store = TableStore.from_config(cfg, spark)
    silver, quarantine = f"silver_{name}", f"quarantine_{name}"
    store.check_names(silver, quarantine, RUNS_TABLE)
    dataset_dir = Path(cfg.output.shards_dir).absolute() / name
    report = TextEtlReport(run_id, name, "running", 0, 0, 0, 0, 0.0, shards_dir=str(dataset_dir))
    try:
        checked = validate(read_input(spark, cfg.input), cfg.validation.max_chars,
                           require_split=cfg.split.mode == "given")
        if store.exists(silver):
            present = store.read(silver).select("review_id").distinct().withColumn("_present", F.lit(True))
            checked = checked.join(present, "review_id", "left")
        else:
            checked = checked.withColumn("_present", F.lit(None).cast("boolean"))
        checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            return _run(cfg, spark, store, checked, report, started, silver, quarantine, dataset_dir)
        finally:
            checked.unpersist()
    except (QuarantineRateError, ShardsError, FileNotFoundError, ValueError):
        raise  # the input or the config: recorded where it applies, and said as it is
    except Exception as exc:
        report.status, report.error = "failed", one_line(exc, 2000)
        try:
            _record_run(spark, store, report, started)
        except Exception:  # e.g. the disk is full: the failure itself must still be told
            log.exception("could not record the failed run", extra={"run_id": run_id})
        raise EtlRunFailed(f"text ETL run {run_id} into {silver} failed: {one_line(exc)}. It is recorded in "
                           f"{RUNS_TABLE} (status failed); every Delta commit is all-or-nothing, so fix the cause "
                           "and run again: the rerun adds what this run did not and rewrites shards that lag") from exc


def one_line(exc: BaseException, limit: int = 300) -> str:
    """What went wrong, in one line: for an error from the JVM (Py4J's run to hundreds of lines of Java
    stack) the innermost Java cause, which names the file or resource; shortened to ``limit``."""
    name, text = type(exc).__name__, str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            while java.getCause() is not None and java.getCause() is not java:
                java = java.getCause()
            name, text = java.getClass().getSimpleName(), str(java.getMessage() or "")
        except Exception:  # the JVM is gone: keep Python's text
            pass
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = f"{name}: {lines[0] if lines else ''}"
    if "No space left on device" in str(exc) and "no space left on device" not in text.lower():
        text += " (no space left on device)"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _run(cfg, spark, store, checked, report, started, silver, quarantine, dataset_dir) -> TextEtlReport:
    run_id = report.run_id
    tally = {(r[REASON], bool(r["_present"])): r["count"]
             for r in checked.groupBy(REASON, "_present").count().collect()}  # a handful of rows
    reasons = {k: v for (k, present), v in sorted(tally.items(), key=lambda kv: str(kv[0])) if k is not None}
    read = sum(tally.values())
    quarantined = sum(reasons.values())
    already = sum(v for (k, present), v in tally.items() if k is None and present)
    kept = read - quarantined - already
    rate = quarantined / read if read else 0.0
    report.rows_read, report.rows_kept, report.rows_quarantined = read, kept, quarantined
    report.rows_already_present, report.quarantine_rate, report.reasons = already, round(rate, 6), reasons

    if quarantined:
        bad = (checked.filter(F.col(REASON).isNotNull())
               .select(F.sha2(F.concat_ws("\u0001", "source_file", "raw"), 256).alias("quarantine_key"),
                       "review_id", REASON, *quarantined_raw("raw"), "source_file", F.lit(run_id).alias("run_id"),
                       F.current_timestamp().alias("quarantined_at")))
        store.merge(quarantine, bad, ["quarantine_key"], update_matched=False, commit_info={"lakedl.run_id": run_id},
                    add_columns=True)

    if rate > cfg.validation.max_quarantine_rate:
        report.status = "failed_quarantine_rate"
        _record_run(spark, store, report, started)
        raise QuarantineRateError(
            f"{quarantined} of {read} rows ({rate:.1%}) were quarantined, above validation.max_quarantine_rate="
            f"{cfg.validation.max_quarantine_rate:.1%}; reasons: {reasons}. Nothing was added to {silver}; "
            f"inspect `lakedl tables show {quarantine}`")

    new = checked.filter(F.col(REASON).isNull() & F.col("_present").isNull()).drop("_present", REASON)
    new = assign_split(new, cfg.split.mode, cfg.split.train, cfg.split.dev, cfg.split.seed)
    artifact = dataset_dir / "_artifacts" / f"tokenizer-{cfg.tokenize.kind}.json"
    if kept:
        new = new.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            with file_lock(dataset_dir / ".lock"):  # concurrent first runs build one tokenizer, not two
                tok = _tokenizer(cfg, new.filter(F.col("split") == "train"), artifact)
            encoded = (encode_frame(with_targets(new), Normalizer.from_settings(cfg.normalize), tok, "text",
                                    cfg.encode.max_len, cfg.encode.fixed)
                       .drop("raw", MALFORMED)
                       .withColumn("tokenizer_sha256", F.lit(tok.sha256))
                       .withColumn("run_id", F.lit(run_id)))
            result = store.merge(silver, encoded, ["review_id"], update_matched=False,
                                 commit_info={"lakedl.run_id": run_id})
        finally:
            new.unpersist()
        # rows a concurrent run inserted first were not inserted by this one: they were already present
        report.rows_already_present += report.rows_kept - result.inserted
        report.rows_kept = result.inserted
    elif not store.exists(silver):
        report.status = "succeeded"  # nothing valid was read and there is no silver table yet
        _record_run(spark, store, report, started)
        return report
    elif not artifact.is_file():  # nothing new, and the shards could not be rebuilt if they lagged
        report.silver_version = store.version(silver)
        report.status = "failed_tokenizer_missing"
        _record_run(spark, store, report, started)
        raise ShardsError(
            f"{silver} holds every input row but its tokenizer {artifact} is gone, so its shards cannot be "
            f"rewritten with the same ids; drop {store.path(silver)} (and {dataset_dir}) and run the ETL again")
    else:
        tok = TextTokenizer.load(artifact)
    report.tokenizer, report.tokenizer_sha256 = tok.kind, tok.sha256
    sync_shards(spark, store, silver, dataset_dir, cfg, report)
    report.status = "succeeded"
    _record_run(spark, store, report, started)
    log.info("text etl done", extra={k: v for k, v in asdict(report).items() if k != "reasons"})
    return report



def quarantined_raw(col: str) -> list[Column]:
    """A quarantined record as every reader can show it: ``raw`` as valid UTF-8 (bytes that are not become
    U+FFFD) and, only for such records, ``raw_bytes``, the record's exact bytes."""
    valid = F.is_valid_utf8(col)
    return [F.when(valid, F.col(col)).otherwise(F.make_valid_utf8(col)).alias(col),
            F.when(~valid, F.col(col).cast("binary")).alias(f"{col}_bytes")]


def sync_shards(spark: SparkSession, store: TableStore, silver: str, dataset_dir: Path, cfg,
                report: TextEtlReport) -> None:
    """Bring the shards up to the silver table's current version, under the dataset's lock: a concurrent run
    waits, then finds them current. Leftovers of a killed rewrite are removed first. Fills the report's
    ``silver_version`` (the version the shards hold) and ``rows_per_split``."""
    with file_lock(dataset_dir / ".lock"):
        for leftover in remove_leftovers(dataset_dir):
            log.info("removed a killed run's leftover", extra={"path": str(leftover)})
        version = store.version(silver)
        manifest = dataset_dir / "manifest.json"
        done = json.loads(manifest.read_text()) if manifest.is_file() else {}
        report.silver_version = version
        if done.get("silver_version") == version and all((dataset_dir / s).is_dir() for s in ("train", "dev", "test")):
            report.rows_per_split = done["rows_per_split"]
            return
        if done:  # an earlier run committed silver and stopped before its shards (or they were deleted)
            log.info("rewriting shards", extra={"silver_version": version, "shards_version": done.get("silver_version")})
        report.rows_per_split = write_shards(spark, store, silver, dataset_dir, cfg, version)
        _write_manifest(store, silver, dataset_dir, cfg, report)


def write_shards(spark: SparkSession, store: TableStore, silver: str, dataset_dir: Path, cfg,
                 version: int | None = None) -> dict[str, int]:
    """Rewrite ``<dataset_dir>/<split>/`` from the silver table (at ``version``), rows ordered by review_id,
    with the configured rows per file and row-group size (each split swapped in atomically)."""
    table = store.read(silver, version)
    columns = [c for c in SHARD_COLUMNS if c != "split" and (c != "input_ids" or cfg.encode.fixed)]
    counts = {r["split"]: r["count"] for r in table.groupBy("split").count().collect()}
    for split in ("train", "dev", "test"):
        rows = table.filter(F.col("split") == split).select(*columns).orderBy("review_id")
        store.write_parquet(rows, dataset_dir / split, max_records_per_file=cfg.output.rows_per_file,
                            row_group_bytes=cfg.output.row_group_mb * 1024 * 1024)
    return {s: counts.get(s, 0) for s in ("train", "dev", "test")}


def _write_manifest(store: TableStore, silver: str, dataset_dir: Path, cfg, report: TextEtlReport) -> None:
    import pyarrow.parquet as pq

    files = {s: sorted(p.name for p in (dataset_dir / s).glob("*.parquet")) for s in ("train", "dev", "test")}
    schema = None
    for split, names in files.items():
        if names:
            schema = str(pq.read_schema(dataset_dir / split / names[0])).splitlines()
            break
    manifest = {
        "dataset": cfg.output.name, "run_id": report.run_id, "silver_table": silver,
        "silver_version": report.silver_version, "rows_per_split": report.rows_per_split,
        "tokenizer": report.tokenizer, "tokenizer_sha256": report.tokenizer_sha256,
        "tokenizer_artifact": f"_artifacts/tokenizer-{report.tokenizer}.json",
        "max_len": cfg.encode.max_len, "schema": schema, "files": files,
        "config": cfg.model_dump(mode="json"),
    }
    tmp = dataset_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(dataset_dir / "manifest.json")


def _record_run(spark: SparkSession, store: TableStore, report: TextEtlReport, started: float) -> None:
    report.seconds = round(time.time() - started, 2)
    row = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in asdict(report).items()}
    schema = ("run_id string, dataset string, status string, rows_read long, rows_kept long, "
              "rows_quarantined long, rows_already_present long, quarantine_rate double, reasons string, "
              "rows_per_split string, tokenizer string, tokenizer_sha256 string, silver_version long, "
              "shards_dir string, seconds double, error string")
    store.write(RUNS_TABLE, spark.createDataFrame([row], schema), "append", commit_info={"lakedl.run_id": report.run_id},
                add_columns=True)
