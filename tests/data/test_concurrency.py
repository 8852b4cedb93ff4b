"""Concurrent writers keep Delta's guarantees: every id once, every reported count true.

The stress test runs real processes, each with its own SparkSession, against one real Delta table.
``make stress`` repeats the concurrency tests (``STRESS_LOOPS`` times, default 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from etl.core.tables import TableConflict, TableStore

pytestmark = pytest.mark.spark
HERE = Path(__file__).parent
REPO = HERE.parents[1]
LOOPS = range(int(os.environ.get("LAKEDL_STRESS_LOOPS", "1")))  # make stress: 20


def id_counts(store: TableStore, name: str) -> Counter:
    return Counter(store.read_arrow(name, columns=["id"]).column("id").to_pylist())


class _CommitsFirst(TableStore):
    """A store whose next commit is preceded by another writer's commit of ``rows`` to the same table:
    a real concurrent commit landing between this store's read and its commit, made deterministic."""

    def __init__(self, *args, other: TableStore, rows, **kwargs):
        super().__init__(*args, **kwargs)
        self.other, self.rows = other, rows

    def _commit_frame(self, name, df, partition_by, commit):
        if self.rows is not None:
            rows, self.rows = self.rows, None
            self.other.merge(name, rows, ["id"], update_matched=False)
        return super()._commit_frame(name, df, partition_by, commit)


def test_an_insert_only_merge_that_loses_the_race_is_recomputed(spark, tmp_path):
    plain = TableStore(tmp_path, spark)
    plain.write("t", spark.range(0, 10).withColumn("v", F.lit("base")))
    theirs = spark.range(10, 20).withColumn("v", F.lit("theirs"))
    store = _CommitsFirst(tmp_path, spark, other=TableStore(tmp_path, spark), rows=theirs)
    result = store.merge("t", spark.range(5, 25).withColumn("v", F.lit("mine")), ["id"], update_matched=False)
    counts = id_counts(plain, "t")
    assert sorted(counts) == list(range(25)) and set(counts.values()) == {1}
    assert (result.inserted, result.version, store.conflicts) == (5, 2, 1)  # 20..24 only, after theirs (v1)
    assert plain.version("t") == 2
    assert sorted(r["v"] for r in plain.read("t").filter("id >= 20").collect()) == ["mine"] * 5


def test_an_updating_merge_that_loses_the_race_updates_the_winner_rows_too(spark, tmp_path):
    plain = TableStore(tmp_path, spark)
    plain.write("t", spark.range(0, 4).withColumn("v", F.lit("base")))
    store = _CommitsFirst(tmp_path, spark, other=TableStore(tmp_path, spark),
                          rows=spark.range(4, 6).withColumn("v", F.lit("theirs")))
    result = store.merge("t", spark.range(2, 6).withColumn("v", F.lit("mine")), ["id"])
    got = {r["id"]: r["v"] for r in plain.read("t").collect()}
    assert got == {0: "base", 1: "base", 2: "mine", 3: "mine", 4: "mine", 5: "mine"}
    assert (result.inserted, result.updated, store.conflicts) == (0, 4, 1)


def test_an_overwrite_that_loses_the_race_is_redone_on_the_new_snapshot(spark, tmp_path):
    plain = TableStore(tmp_path, spark)
    plain.write("t", spark.range(0, 3).withColumn("v", F.lit("base")))

    class AppendsFirst(TableStore):
        done = False

        def _commit_frame(self, name, df, partition_by, commit):
            if not self.done:
                self.done = True
                plain.write(name, spark.range(100, 102).withColumn("v", F.lit("late")), "append")
            return super()._commit_frame(name, df, partition_by, commit)

    store = AppendsFirst(tmp_path, spark)
    store.write("t", spark.range(7, 9).withColumn("v", F.lit("new")), "overwrite")
    assert sorted(id_counts(plain, "t")) == [7, 8] and store.conflicts == 1


def test_a_writer_that_always_loses_gives_up_with_one_clear_error(spark, tmp_path):
    plain = TableStore(tmp_path, spark)
    plain.write("t", spark.range(0, 2).withColumn("v", F.lit("base")))

    class AlwaysLoses(TableStore):
        n = 0

        def _commit_frame(self, name, df, partition_by, commit):
            self.n += 1
            plain.write(name, spark.createDataFrame([(1000 + self.n, "x")], "id long, v string"), "append")
            return super()._commit_frame(name, df, partition_by, commit)

    store = AlwaysLoses(tmp_path, spark, conflict_retries=2)
    with pytest.raises(TableConflict, match=r"concurrent writer committed first on each of 3 tries; nothing"):
        store.merge("t", spark.range(50, 52).withColumn("v", F.lit("mine")), ["id"], update_matched=False)
    counts = id_counts(plain, "t")
    assert 50 not in counts and len(counts) == 5  # 0, 1 and the three concurrent appends
    assert not list((plain.path("t") / "_staging").glob("*"))  # nothing staged is left behind


def test_two_writers_creating_one_table_at_once_both_land(spark, tmp_path):
    plain = TableStore(tmp_path, spark)

    class CreatesFirst(TableStore):
        done = False

        def _commit_frame(self, name, df, partition_by, commit):
            if not self.done:
                self.done = True
                plain.merge(name, spark.range(0, 3).withColumn("v", F.lit("theirs")), ["id"], update_matched=False)
            return super()._commit_frame(name, df, partition_by, commit)

    result = CreatesFirst(tmp_path, spark).merge("t", spark.range(2, 5).withColumn("v", F.lit("mine")), ["id"],
                                                 update_matched=False)
    assert sorted(id_counts(plain, "t").items()) == [(i, 1) for i in range(5)] and result.inserted == 2


def test_two_writers_adding_one_column_at_once_both_land(spark, tmp_path):
    """Two `score --explain` runs meeting a predictions table without `top_tokens`: both read the schema, both
    add the column. The one whose add commits second gets delta-rs's "metadata changed" conflict; its merge is
    retried on the new snapshot, where the column exists, and lands. The column is added once, every id is
    in the table once."""
    from deltalake import DeltaTable
    from deltalake.schema import Field

    plain = TableStore(tmp_path, spark)
    plain.write("t", spark.range(0, 4).withColumn("v", F.lit("base")))
    theirs = spark.range(4, 6).withColumn("v", F.lit("theirs")).withColumn("top_tokens", F.lit("[]"))

    class AddsSecond(TableStore):
        pending = True

        def _add_columns(self, name, df):
            if self.pending:  # this writer's snapshot, then the other run's add and merge, then this add
                self.pending = False
                stale = DeltaTable(str(self.path(name)))
                plain.merge(name, theirs, ["id"], update_matched=False, add_columns=True)
                stale.alter.add_columns([Field("top_tokens", "string", nullable=True)])
            return super()._add_columns(name, df)

    store = AddsSecond(tmp_path, spark)
    mine = spark.range(5, 8).withColumn("v", F.lit("mine")).withColumn("top_tokens", F.lit('[["good", 1.0]]'))
    result = store.merge("t", mine, ["id"], update_matched=False, add_columns=True)
    assert store.conflicts == 1 and result.inserted == 2  # 6 and 7: 5 is theirs
    assert plain.schema("t").names == ["id", "v", "top_tokens"]
    rows = {r["id"]: (r["v"], r["top_tokens"]) for r in plain.read_arrow("t").to_pylist()}
    assert sorted(rows) == list(range(8)) and len(plain.read_arrow("t")) == 8
    assert rows[0] == ("base", None) and rows[5] == ("theirs", "[]") and rows[7] == ("mine", '[["good", 1.0]]')


def run_writers(tmp_path: Path, writers: int = 4, rounds: int = 3) -> list[dict]:
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, str(HERE / "concurrent_writer.py"), str(tmp_path / "tables"), str(w),
                               str(writers), str(rounds), str(gate)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(writers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results += [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return results


@pytest.mark.parametrize("loop", LOOPS)
def test_four_concurrent_writer_processes_merging_overlapping_batches_insert_every_id_once(spark, tmp_path, loop):
    writers, rounds = 4, 3
    results = run_writers(tmp_path, writers, rounds)
    assert len(results) == writers
    store = TableStore(tmp_path / "tables", spark)
    counts = id_counts(store, "shared")
    expected = {100 * r + 10 * w + k for r in range(rounds) for w in range(writers) for k in range(40)}
    assert set(counts) == expected and set(counts.values()) == {1}
    # every run's report is true: what the writers say they inserted adds up to the rows in the table
    assert sum(sum(r["inserted"]) for r in results) == len(expected)
    runs = store.read_arrow("writer_runs").to_pylist()
    assert len(runs) == writers * rounds and sum(r["inserted"] for r in runs) == len(expected)
    # each version of the table is one writer's merge: rows at each version match that commit's own count
    assert store.version("shared") == writers * rounds - 1 - sum(1 for r in runs if r["inserted"] == 0)
