"""Bronze layer: canonical raw review JSON lines → the bronze Delta table, as read, nothing dropped."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.tables import TableStore

CORRUPT = "_corrupt_record"

# The Yelp academic review fields, plus where the row came from and the original label/score.
RAW_REVIEW_SCHEMA = T.StructType([
    T.StructField("review_id", T.StringType()),
    T.StructField("business_id", T.StringType()),
    T.StructField("user_id", T.StringType()),
    T.StructField("stars", T.DoubleType()),
    T.StructField("text", T.StringType()),
    T.StructField("date", T.StringType()),
    T.StructField("source", T.StringType()),
    T.StructField("label", T.IntegerType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("split", T.StringType()),
    T.StructField(CORRUPT, T.StringType()),
])


@dataclass(frozen=True)
class BronzeLoad:
    rows_read: int
    rows_corrupt: int
    rows_inserted: int
    version: int


def read_raw_reviews(spark: SparkSession, path: str) -> DataFrame:
    """Canonical JSON lines under ``path``, read in parallel; malformed lines keep their raw text in
    ``_corrupt_record`` instead of being dropped."""
    return (spark.read.schema(RAW_REVIEW_SCHEMA)
            .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
            .json(path)
            .select("*", F.col("_metadata.file_path").alias("source_file")))


def with_ingest_columns(df: DataFrame, run_id: str) -> DataFrame:
    """Add the bronze bookkeeping columns: a stable record key, the run id and the ingest time."""
    key = F.coalesce(F.col("review_id"), F.concat(F.lit("raw-sha256:"), F.sha2(F.col(CORRUPT), 256)))
    return (df.withColumn("record_key", key)
              .withColumn("ingest_run_id", F.lit(run_id))
              .withColumn("ingested_at", F.current_timestamp()))


def load_bronze(spark: SparkSession, store: TableStore, path: str, table: str, run_id: str) -> BronzeLoad:
    """Insert reviews from ``path`` not yet in ``table`` (by ``record_key``); a re-run inserts nothing."""
    raw = read_raw_reviews(spark, path).cache()
    try:
        counts = raw.agg(F.count(F.lit(1)).alias("n"),
                         F.count(F.col(CORRUPT)).alias("corrupt")).first()
        result = store.merge(table, with_ingest_columns(raw, run_id), keys=["record_key"], update_matched=False,
                             commit_info={"lakedl.run_id": run_id})
    finally:
        raw.unpersist()
    return BronzeLoad(counts["n"], counts["corrupt"], result.inserted, result.version)


def counts_by_source(df: DataFrame) -> dict[str, int]:
    """Rows per ``source`` (an aggregate: a handful of rows reach the driver)."""
    return {r["source"] or "<none>": r["count"] for r in df.groupBy("source").count().orderBy("source").collect()}
