"""Text ETL: raw review corpora → validated, tokenized, encoded silver table and Parquet shards.

read (the files of input.paths, or with input.format=bronze the rows the bronze table gained since this
dataset's last run: the raw files are then parsed once, by `lakedl bronze load`) → validate (quarantine
with a reason) → skip reviews already in silver → split → normalize →
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

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.core import catalog
from etl.core.errors import LakedlError, MissingInput
from etl.core.lease import file_lock
from etl.core.logs import get_logger
from etl.core.runs import (
    ETL_RUNS,
    ETL_RUNS_SCHEMA,
    EtlReport,
    StageClock,
    Tally,
    new_run_id,
    one_line,
    peak_rss_by_kind,
    quarantine,
    quarantined_raw,
    recorded_run,
)
from etl.core.spark import spill
from etl.core.splits import hashed_split, split_bucket
from etl.core.tables import TableStore, remove_leftovers
from etl.sources.readers import MALFORMED, RAW_COLUMNS, read_input
from etl.text.config import TextEtlConfig
from etl.text.textprep import (
    Normalizer,
    TextTokenizer,
    build_word_vocab,
    encode_frame,
    load_minilm,
    train_subword,
    word_tokens_udf,
)
from etl.text.validate import REASON, mark_held_out_texts, validate

log = get_logger(__name__)

SHARD_COLUMNS = ("review_id", "ids", "length", "input_ids", "sentiment", "sentiment_mask", "rating", "rating_mask",
                 "rating_reg", "split")
RUNS_TABLE = ETL_RUNS


class QuarantineRateError(LakedlError, RuntimeError):
    """Too many rows were quarantined: the run commits only the quarantine and its run record."""


class ShardsError(LakedlError, RuntimeError):
    """The shards cannot be brought up to date with the silver table."""


class EtlRunFailed(LakedlError, RuntimeError):
    """A run failed for a reason outside the input (a concurrent-commit conflict, a full disk, a Spark
    error); its ``failed`` row is in ``etl_runs``. The message is one line: the cause and what to do."""


@dataclass
class TextEtlReport(EtlReport):
    tokenizer: str = ""
    tokenizer_sha256: str = ""
    silver_version: int | None = None
    bronze_version: int | None = None  # input.format=bronze: the bronze version this run read up to
    bronze_table: str | None = None
    # wall seconds per stage (read_validate, quarantine, vocabulary, encode_merge, shards) and peak RSS in MB
    # per process kind on this host (driver_python, jvm, python_workers): etl/core/runs.py
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


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
    silver, quarantine_table = catalog.silver(name), catalog.quarantine(name)
    store.check_names(silver, quarantine_table, RUNS_TABLE)
    dataset_dir = Path(cfg.output.shards_dir).absolute() / name
    report = TextEtlReport(run_id, name, shards_dir=str(dataset_dir))
    record: dict = {}
    try:
        with recorded_run(store, RUNS_TABLE, record, ETL_RUNS_SCHEMA):  # every ending appends its etl_runs row
            try:
                return _checked_run(cfg, spark, store, report, silver, quarantine_table, dataset_dir)
            finally:
                report.peak_rss_mb = peak_rss_by_kind()
                record.update(report.record("text"))
    except (QuarantineRateError, ShardsError, FileNotFoundError, ValueError):
        raise  # the input or the config: said as it is
    except Exception as exc:
        raise EtlRunFailed(f"text ETL run {run_id} into {silver} failed: {one_line(exc)}. It is recorded in "
                           f"{RUNS_TABLE} (status failed); every Delta commit is all-or-nothing, so fix the cause "
                           "and run again: the rerun adds what this run did not and rewrites shards that lag") from exc
    finally:
        report.seconds = round(time.time() - started, 2)


def _checked_run(cfg, spark, store, report, silver, quarantine_table, dataset_dir) -> TextEtlReport:
    checked = validate(_read(spark, store, cfg, report), cfg.validation.max_chars,
                       require_split=cfg.split.mode == "given")
    if cfg.validation.held_out_texts:  # needs each row's split (assigning it again later changes nothing)
        checked = mark_held_out_texts(assign_split(checked, cfg.split.mode, cfg.split.train, cfg.split.dev,
                                                    cfg.split.seed))
    if store.exists(silver):
        present = store.read(silver).select("review_id").distinct().withColumn("_present", F.lit(True))
        checked = checked.join(present, "review_id", "left")
    else:
        checked = checked.withColumn("_present", F.lit(None).cast("boolean"))
    checked = spill(checked)
    try:
        return _run(cfg, spark, store, checked, report, silver, quarantine_table, dataset_dir)
    finally:
        checked.unpersist()


def _read(spark: SparkSession, store: TableStore, cfg: TextEtlConfig, report: TextEtlReport) -> DataFrame:
    """The run's input in the reader's columns: the files of ``input.paths``, or (``input.format=bronze``) the
    rows the bronze table gained since the version this dataset's last successful run read, pinned to the
    bronze version now (recorded as ``bronze_version`` in etl_runs)."""
    if cfg.input.format != "bronze":
        return read_input(spark, cfg.input)
    table = cfg.input.table
    store.check_names(table)
    if not store.exists(table):
        raise MissingInput(f"input.table={table}: no such table under {store.root}; run `lakedl bronze load` first")
    since = last_bronze_version(store, report.dataset, table)
    report.bronze_table = table
    added, report.bronze_version = store.read_added(table, since)
    log.info("reading bronze", extra={"table": table, "since_version": since, "version": report.bronze_version})
    rows = added.select(*RAW_COLUMNS)
    if cfg.input.source:
        rows = rows.withColumn("source", F.coalesce(F.col("source"), F.lit(cfg.input.source)))
    return rows


def last_bronze_version(store: TableStore, dataset: str, table: str) -> int | None:
    """The bronze version the last successful run of ``dataset`` read up to (None: no such run)."""
    if not store.exists(RUNS_TABLE) or "bronze_version" not in store.schema(RUNS_TABLE).names:
        return None
    runs = store.read_arrow(RUNS_TABLE, columns=["dataset", "status", "bronze_table", "bronze_version"])
    versions = [r["bronze_version"] for r in runs.to_pylist() if r["dataset"] == dataset and r["status"] == "succeeded"
                and r["bronze_table"] == table and r["bronze_version"] is not None]
    return max(versions) if versions else None


def _run(cfg, spark, store, checked, report, silver, quarantine_table, dataset_dir) -> TextEtlReport:
    run_id = report.run_id
    clock = StageClock()
    report.stage_seconds = clock.seconds
    with clock("read_validate"):
        tally = Tally.of({(r[REASON], bool(r["_present"])): r["count"]
                          for r in checked.groupBy(REASON, "_present").count().collect()})  # a handful of rows
    report.reconcile(tally)
    read, kept, quarantined, reasons, rate = tally.read, tally.kept, tally.quarantined, tally.reasons, tally.rate

    if quarantined:
        bad = (checked.filter(F.col(REASON).isNotNull())
               .select(F.sha2(F.concat_ws("\u0001", "source_file", "raw"), 256).alias("quarantine_key"),
                       "review_id", REASON, *quarantined_raw("raw"), "source_file"))
        with clock("quarantine"):
            quarantine(store, quarantine_table, bad, run_id)

    if rate > cfg.validation.max_quarantine_rate:
        report.status = "failed_quarantine_rate"
        raise QuarantineRateError(
            f"{quarantined} of {read} rows ({rate:.1%}) were quarantined, above validation.max_quarantine_rate="
            f"{cfg.validation.max_quarantine_rate:.1%}; reasons: {reasons}. Nothing was added to {silver}; "
            f"inspect `lakedl tables show {quarantine_table}`")

    new = checked.filter(F.col(REASON).isNull() & F.col("_present").isNull()).drop("_present", REASON)
    new = assign_split(new, cfg.split.mode, cfg.split.train, cfg.split.dev, cfg.split.seed)
    artifact = dataset_dir / "_artifacts" / f"tokenizer-{cfg.tokenize.kind}.json"
    if kept:
        new = spill(new)
        try:
            with file_lock(dataset_dir / ".lock"), clock("vocabulary"):  # concurrent first runs: one tokenizer
                tok = _tokenizer(cfg, new.filter(F.col("split") == "train"), artifact)
            encoded = (encode_frame(with_targets(new.drop("raw", MALFORMED)), Normalizer.from_settings(cfg.normalize),
                                    tok, "text", cfg.encode.max_len, cfg.encode.fixed)  # raw: not carried through
                       .withColumn("tokenizer_sha256", F.lit(tok.sha256))
                       .withColumn("run_id", F.lit(run_id)))
            with clock("encode_merge"):
                result = store.merge(silver, encoded, ["review_id"], update_matched=False,
                                     commit_info={"lakedl.run_id": run_id})
        finally:
            new.unpersist()
        # rows a concurrent run inserted first were not inserted by this one: they were already present
        report.rows_already_present += report.rows_kept - result.inserted
        report.rows_kept = result.inserted
    elif not store.exists(silver):
        report.status = "succeeded"  # nothing valid was read and there is no silver table yet
        return report
    elif not artifact.is_file():  # nothing new, and the shards could not be rebuilt if they lagged
        report.silver_version = store.version(silver)
        report.status = "failed_tokenizer_missing"
        raise ShardsError(
            f"{silver} holds every input row but its tokenizer {artifact} is gone, so its shards cannot be "
            f"rewritten with the same ids; drop {store.path(silver)} (and {dataset_dir}) and run the ETL again")
    else:
        tok = TextTokenizer.load(artifact)
    report.tokenizer, report.tokenizer_sha256 = tok.kind, tok.sha256
    with clock("shards"):
        sync_shards(spark, store, silver, dataset_dir, cfg, report)
    report.status = "succeeded"
    log.info("text etl done", extra={k: v for k, v in asdict(report).items()
                                     if k not in ("reasons", "stage_seconds", "peak_rss_mb")})
    return report



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


def run_etl_text(cfg, spark=None) -> dict:
    """The text ETL as a job: one run id, a Spark job description, a plain-dict report."""
    from etl.core.spark import get_spark, job_description

    spark = spark or get_spark(cfg.spark)
    run_id = new_run_id("etl-text")
    with job_description(spark, f"lakedl etl text {run_id}"):
        return asdict(run_text_etl(cfg, spark, run_id))
