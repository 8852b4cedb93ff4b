"""Bronze layer: canonical raw review JSON lines → the bronze Delta table, parsed once, as read, nothing
dropped. Its columns are the canonical reader's (etl/sources/readers.py ``RAW_COLUMNS``: every review field
as text, the raw line, the file, malformed/wrong-type marks, the record's place in its file) plus
``record_key``, ``ingest_run_id`` and ``ingested_at``; the text ETL reads the rows added since its last run
(``input.format=bronze``), so raw files are parsed once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.core import catalog
from etl.core.config import CommonConfig, Section, register_job
from etl.core.errors import MissingInput
from etl.core.logs import get_logger
from etl.core.runs import new_run_id
from etl.core.spark import spill
from etl.core.tables import TableError, TableStore
from etl.sources.readers import MALFORMED, read_json_lines

log = get_logger(__name__)

class BronzeSettings(Section):
    input: str = Field("data/raw/reviews", description="directory or glob of canonical JSON-lines reviews")
    table: str = catalog.BRONZE_REVIEWS


class LoadBronzeConfig(CommonConfig):
    bronze: BronzeSettings = BronzeSettings()


register_job("load_bronze", LoadBronzeConfig)


@dataclass(frozen=True)
class BronzeLoad:
    rows_read: int
    rows_corrupt: int
    rows_inserted: int
    version: int


def with_ingest_columns(df: DataFrame, run_id: str) -> DataFrame:
    """Add the bronze bookkeeping columns: the record key (a hash of the raw record: loading the same
    file again adds nothing, a changed line is a new record), the run id and the ingest time."""
    return (df.withColumn("record_key", F.sha2(F.col("raw"), 256))
              .withColumn("ingest_run_id", F.lit(run_id))
              .withColumn("ingested_at", F.current_timestamp()))


def check_layout(store: TableStore, table: str) -> None:
    """Refuse a bronze table written before bronze held the reader's columns (raw, _malformed, ...)."""
    if store.exists(table) and "raw" not in store.schema(table).names:
        raise TableError(f"{table} has the typed layout of lakedl before 0.2 (no raw column), which the text ETL "
                         f"cannot read: move {store.path(table)} aside and run `lakedl bronze load` again")


def load_bronze(spark: SparkSession, store: TableStore, path: str, table: str, run_id: str) -> BronzeLoad:
    """Parse the canonical JSON lines under ``path`` once (etl/sources/readers.py: every field as text,
    the raw line kept, malformed lines marked, not dropped) and insert the records not yet in ``table``
    (by ``record_key``); a re-run inserts nothing. The text ETL reads what was added (input.format=bronze)."""
    check_layout(store, table)
    raw = spill(read_json_lines(spark, [path]))
    try:
        counts = raw.agg(F.count(F.lit(1)).alias("n"), F.count(F.col(MALFORMED)).alias("corrupt")).first()
        result = store.merge(table, with_ingest_columns(raw, run_id), keys=["record_key"], update_matched=False,
                             commit_info={"lakedl.run_id": run_id})
    finally:
        raw.unpersist()
    return BronzeLoad(counts["n"], counts["corrupt"], result.inserted, result.version)


def counts_by_source(df: DataFrame) -> dict[str, int]:
    """Rows per ``source`` (an aggregate: a handful of rows reach the driver)."""
    return {r["source"] or "<none>": r["count"] for r in df.groupBy("source").count().orderBy("source").collect()}


@dataclass
class BronzeReport:
    run_id: str
    table: str
    rows_read: int
    rows_corrupt: int
    rows_inserted: int
    version: int
    rows_by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def run_load_bronze(cfg: LoadBronzeConfig, spark=None) -> BronzeReport:
    """Load canonical raw reviews into the bronze table and count its rows per source."""
    from etl.core.spark import get_spark, job_description

    spark = spark or get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    run_id = new_run_id("bronze")
    source = cfg.bronze.input
    if not any(Path(source).glob("*.json*")) and Path(source).is_dir():
        raise MissingInput(f"no JSON-lines files in {source}: run `lakedl data fetch` first")
    with job_description(spark, f"lakedl bronze load {run_id}"):
        loaded = load_bronze(spark, store, source, cfg.bronze.table, run_id)
        by_source = counts_by_source(store.read(cfg.bronze.table))
    report = BronzeReport(run_id, cfg.bronze.table, loaded.rows_read, loaded.rows_corrupt, loaded.rows_inserted,
                          loaded.version, by_source)
    log.info("bronze loaded", extra=report.as_dict())
    return report
