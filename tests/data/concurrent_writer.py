"""One of several writer processes started at once by test_concurrency.py (a real SparkSession each).

    concurrent_writer.py TABLES_DIR WRITER WRITERS ROUNDS GATE_DIR

Waits until every writer's Spark is up (a file per writer in GATE_DIR), then for each round MERGEs
(insert-only, keyed by ``id``) a batch of ids that overlaps the batches of the other writers, and
appends a run record to ``writer_runs``. Prints one ``RESULT {json}`` line: what each merge inserted,
as the store reported it, and how many commits it lost to another writer and redid.
"""

import json
import sys
import time
from pathlib import Path

from etl.core.config import SparkSettings
from etl.core.spark import get_spark
from etl.core.tables import TableStore

tables, writer, writers, rounds, gate = sys.argv[1], *map(int, sys.argv[2:5]), Path(sys.argv[5])
spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=1, driver_memory="768m"))
store = TableStore(tables, spark=spark, backend="delta-rs", conflict_retries=12)
(gate / f"ready-{writer}").touch()
deadline = time.monotonic() + 180
while len(list(gate.glob("ready-*"))) < writers and time.monotonic() < deadline:
    time.sleep(0.05)

inserted = []
for r in range(rounds):
    # round r of writer w: ids [100r + 10w, 100r + 10w + 40): each id is in the batches of up to 4 writers
    start = 100 * r + 10 * writer
    batch = spark.createDataFrame([(i, f"w{writer}r{r}") for i in range(start, start + 40)], "id long, by string")
    result = store.merge("shared", batch, ["id"], update_matched=False, commit_info={"writer": str(writer)})
    inserted.append(result.inserted)
    store.write("writer_runs", spark.createDataFrame([(writer, r, result.inserted)],
                                                     "writer int, round int, inserted long"), "append")
print("RESULT " + json.dumps({"writer": writer, "inserted": inserted, "conflicts": store.conflicts}), flush=True)
spark.stop()
