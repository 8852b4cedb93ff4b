"""Run by test_bundle.py as a second process: an incremental scoring run of table ``reviews``.

    score_child.py TABLES_DIR BUNDLE run     a normal run; prints its record, or LEASE HELD
    score_child.py TABLES_DIR BUNDLE crash   the process dies (os._exit, like kill -9) at the moment the
                                             predictions MERGE commits to the Delta log — after its Parquet
                                             files are in the table directory, before the commit that
                                             would make them visible
    score_child.py TABLES_DIR BUNDLE crash-after-commit
                                             the process dies right after the predictions commit that
                                             carries the run's application transaction, before the run's
                                             record is written
"""

import json
import os
import sys

import deltalake

from dl.serve.score import score_incremental
from etl.core.config import SparkSettings
from etl.core.lease import LeaseHeld
from etl.core.spark import get_spark
from etl.core.tables import TableStore

tables, bundle, mode = sys.argv[1:4]


def die(*args, **kwargs):
    print("CRASHING AT COMMIT", flush=True)
    os._exit(137)


if mode == "crash":
    deltalake.DeltaTable.create_write_transaction = die
elif mode == "crash-after-commit":
    commit = deltalake.DeltaTable.create_write_transaction

    def commit_then_die(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        if kwargs["commit_properties"].app_transactions:
            print("CRASHING AFTER COMMIT", flush=True)
            os._exit(137)

    deltalake.DeltaTable.create_write_transaction = commit_then_die
spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=2, driver_memory="1g"))
print("STARTED", flush=True)
try:
    print("RESULT " + json.dumps(score_incremental(TableStore(tables, spark=spark, backend="delta-rs"), "reviews",
                                                   bundle)), flush=True)
except LeaseHeld as exc:
    print(f"LEASE HELD {exc}", flush=True)
