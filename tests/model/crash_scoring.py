"""Run by test_bundle.py: an incremental scoring run whose process dies (os._exit, like kill -9) at the
moment the predictions MERGE commits to the Delta log — after its Parquet files are in the table
directory, before the commit that would make them visible."""

import os
import sys

import deltalake

from dl.score import score_incremental
from etl.config import SparkSettings
from etl.spark import get_spark
from etl.tables import TableStore

tables, bundle = sys.argv[1:3]


def die(*args, **kwargs):
    print("CRASHING AT COMMIT", flush=True)
    os._exit(137)


deltalake.DeltaTable.create_write_transaction = die
spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=2, driver_memory="1g"))
score_incremental(TableStore(tables, spark=spark, backend="delta-rs"), "reviews", bundle)
print("NOT REACHED", flush=True)
