"""The table store on a real SparkSession and real Delta tables (delta-rs backend here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from etl.core.tables import TableError, TableStore

pytestmark = pytest.mark.spark

SCHEMA = "id long, name string, score double, part string"


@pytest.fixture
def store(spark, tmp_path) -> TableStore:
    return TableStore(tmp_path / "tables", spark)


def rows(df, order="id"):
    return [tuple(r) for r in df.orderBy(order).collect()]


def committed_files(table_dir: Path) -> set[str]:
    """Files the Delta log says are live, replaying add/remove actions ourselves."""
    live: set[str] = set()
    for entry in sorted((table_dir / "_delta_log").glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(action["add"]["path"])
            if "remove" in action:
                live.discard(action["remove"]["path"])
    return live


def parquet_on_disk(table_dir: Path) -> set[str]:
    return {p.relative_to(table_dir).as_posix() for p in table_dir.rglob("*.parquet")}


def test_backend_is_delta_rs_without_delta_jars(store):
    assert store.backend == "delta-rs"


def test_append_and_overwrite_versions_and_time_travel(spark, store):
    first = spark.createDataFrame([(1, "a", 1.0, "x"), (2, "b", 2.0, "y")], SCHEMA)
    second = spark.createDataFrame([(3, "c", 3.0, "x")], SCHEMA)
    assert store.write("t", first) == 0
    assert store.write("t", second, "append") == 1
    assert rows(store.read("t")) == [(1, "a", 1.0, "x"), (2, "b", 2.0, "y"), (3, "c", 3.0, "x")]
    assert store.write("t", second, "overwrite") == 2
    assert rows(store.read("t")) == [(3, "c", 3.0, "x")]
    assert rows(store.read("t", version=0)) == [(1, "a", 1.0, "x"), (2, "b", 2.0, "y")]
    assert store.count("t") == 1 and store.count("t", version=1) == 3
    assert store.read_arrow("t", version=1).sort_by("id").column("name").to_pylist() == ["a", "b", "c"]
    ops = [h["operationParameters"]["mode"] for h in store.history("t")]
    assert ops == ["Overwrite", "Append", "ErrorIfExists"]
    # the overwritten files are no longer live, but remain on disk for time travel
    table_dir = store.path("t")
    assert len(committed_files(table_dir)) == 1 and len(parquet_on_disk(table_dir)) >= 3


def test_merge_upserts_and_is_idempotent(spark, store):
    store.write("m", spark.createDataFrame([(1, "a", 1.0, "x"), (2, "b", 2.0, "y"), (3, "c", 3.0, "x")], SCHEMA))
    src = spark.createDataFrame([(2, "B", 20.0, "y"), (4, "d", 4.0, "y")], SCHEMA)
    result = store.merge("m", src, ["id"])
    assert (result.inserted, result.updated, result.version) == (1, 1, 1)
    expected = [(1, "a", 1.0, "x"), (2, "B", 20.0, "y"), (3, "c", 3.0, "x"), (4, "d", 4.0, "y")]
    assert rows(store.read("m")) == expected
    again = store.merge("m", src, ["id"])
    assert rows(store.read("m")) == expected
    assert again.inserted == 0
    assert store.history("m")[0]["lakedl.operation"] == "merge"


def test_insert_only_merge_keeps_existing_rows(spark, store):
    store.write("i", spark.createDataFrame([(1, "a", 1.0, "x")], SCHEMA))
    result = store.merge("i", spark.createDataFrame([(1, "CHANGED", 9.0, "x"), (5, "e", 5.0, "x")], SCHEMA),
                         ["id"], update_matched=False)
    assert (result.inserted, result.updated) == (1, 0)
    assert rows(store.read("i")) == [(1, "a", 1.0, "x"), (5, "e", 5.0, "x")]
    nothing = store.merge("i", spark.createDataFrame([(5, "e", 5.0, "x")], SCHEMA), ["id"], update_matched=False)
    assert nothing.version == result.version  # nothing new: no new version


def test_merge_updates_every_matched_target_row_and_rejects_duplicate_source_keys(spark, store):
    store.write("d", spark.createDataFrame([(1, "a", 1.0, "x"), (1, "a2", 1.5, "y"), (2, "b", 2.0, "y")], SCHEMA))
    result = store.merge("d", spark.createDataFrame([(1, "Z", 0.0, "z")], SCHEMA), ["id"])
    assert result.updated == 2
    assert rows(store.read("d"), ["id", "part"]) == [(1, "Z", 0.0, "z"), (1, "Z", 0.0, "z"), (2, "b", 2.0, "y")]
    dup = spark.createDataFrame([(2, "p", 0.0, "y"), (2, "q", 0.0, "y")], SCHEMA)
    with pytest.raises(TableError, match="several rows for key"):
        store.merge("d", dup, ["id"])


def test_merge_creates_a_missing_table(spark, store):
    result = store.merge("new", spark.createDataFrame([(1, "a", 1.0, "x")], SCHEMA), ["id"])
    assert (result.version, result.inserted, result.updated) == (0, 1, 0)


def test_a_failed_write_leaves_no_partial_version(spark, store):
    store.write("atomic", spark.createDataFrame([(i, f"n{i}", float(i), "x") for i in range(10)], SCHEMA))
    before_files = parquet_on_disk(store.path("atomic"))

    @F.udf("string")
    def explode_on_last_partition(name):
        if name == "n1999":
            raise ValueError("injected failure while writing")
        if name in ("n1000", "n1001"):  # the third partition is still writing when the last one fails
            time.sleep(1.5)
        return name

    # 4 partitions: the first two finish writing their files before the last one fails, the third is mid-write
    big = spark.range(0, 2000, numPartitions=4).select(
        F.col("id"), explode_on_last_partition(F.concat(F.lit("n"), F.col("id").cast("string"))).alias("name"),
        F.col("id").cast("double").alias("score"), F.lit("x").alias("part"))
    with pytest.raises(Exception, match="injected failure"):
        store.write("atomic", big, "append")
    with pytest.raises(Exception, match="injected failure"):
        store.write("atomic", big, "overwrite")
    assert store.version("atomic") == 0
    assert store.count("atomic") == 10
    assert parquet_on_disk(store.path("atomic")) == before_files
    assert not (store.path("atomic") / "_staging").exists()


def test_a_store_under_a_symlinked_directory_reads_its_tables(spark, tmp_path):
    # delta-rs reports file URIs under the resolved root; Spark refused them against the unresolved basePath
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    store = TableStore(tmp_path / "link" / "tables", spark)
    store.write("s", spark.createDataFrame([(1, "a", 1.0, "x"), (2, "b", 2.0, "y")], SCHEMA), partition_by=["part"])
    store.write("s", spark.createDataFrame([(3, "c", 3.0, "x")], SCHEMA), "append")
    assert rows(store.read("s")) == [(1, "a", 1.0, "x"), (2, "b", 2.0, "y"), (3, "c", 3.0, "x")]
    assert rows(store.read("s", version=0).where(F.col("part") == "y")) == [(2, "b", 2.0, "y")]
    arrow = store.read_arrow("s", version=0).sort_by("id")
    assert arrow.column("part").to_pylist() == ["x", "y"] and store.count("s") == 3


def test_partitioned_table_reads_back_partition_values(spark, store):
    df = spark.createDataFrame([(1, "a", 1.0, "train"), (2, "b", 2.0, "test"), (3, "c", None, None)], SCHEMA)
    store.write("p", df, partition_by=["part"])
    assert store.partition_columns("p") == ["part"]
    assert rows(store.read("p")) == [(1, "a", 1.0, "train"), (2, "b", 2.0, "test"), (3, "c", None, None)]
    arrow = store.read_arrow("p").sort_by("id")
    assert arrow.column("part").to_pylist() == ["train", "test", None]
    assert {p.split("/")[0] for p in committed_files(store.path("p"))} == {
        "part=train", "part=test", "part=__HIVE_DEFAULT_PARTITION__"}
    with pytest.raises(TableError, match="partitioned by \\['part'\\], not \\['name'\\]"):
        store.write("p", df, partition_by=["name"])


def test_the_log_follows_the_delta_protocol(spark, store):
    ts = spark.createDataFrame([(1, "a", 1.0, "x")], SCHEMA).withColumn("at", F.current_timestamp())
    store.write("proto", ts, commit_info={"lakedl.run_id": "r-1"})
    entries = [json.loads(x) for x in (store.path("proto") / "_delta_log" / "00000000000000000000.json")
               .read_text().splitlines()]
    kinds = [next(iter(e)) for e in entries]
    assert {"protocol", "metaData", "add", "commitInfo"} <= set(kinds)
    meta = next(e["metaData"] for e in entries if "metaData" in e)
    assert meta["configuration"]["delta.enableDeletionVectors"] == "false"
    fields = {f["name"]: f["type"] for f in json.loads(meta["schemaString"])["fields"]}
    assert fields == {"id": "long", "name": "string", "score": "double", "part": "string", "at": "timestamp"}
    add = next(e["add"] for e in entries if "add" in e)
    assert json.loads(add["stats"])["numRecords"] == 1
    info = next(e["commitInfo"] for e in entries if "commitInfo" in e)
    assert info["lakedl.run_id"] == "r-1"
    # every Parquet file the log references is readable by plain pyarrow (the pyarrow-14 caveat)
    for rel in committed_files(store.path("proto")):
        assert pq.read_metadata(store.path("proto") / rel).num_rows == 1


def test_a_table_from_another_delta_writer_is_appended_and_read(spark, store):
    """delta-rs's own writer creates the table; our Spark-files path appends; both readers agree."""
    from deltalake import DeltaTable, write_deltalake

    path = store.path("foreign")
    write_deltalake(str(path), pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"],
                                         "score": [1.0, 2.0], "part": ["x", "y"]}))
    store.write("foreign", spark.createDataFrame([(3, "c", 3.0, "x")], SCHEMA))
    assert rows(store.read("foreign")) == [(1, "a", 1.0, "x"), (2, "b", 2.0, "y"), (3, "c", 3.0, "x")]
    assert DeltaTable(str(path)).version() == 1
    assert sorted(store.read_arrow("foreign").column("id").to_pylist()) == [1, 2, 3]


def test_delta_spark_reads_what_delta_rs_wrote(spark, store):
    from etl.core.spark import has_delta_jars

    if not has_delta_jars(spark):
        pytest.skip("delta-spark's jars are not on this machine's classpath (Maven is unreachable here); "
                    "on a cluster with Delta this checks the delta-rs → delta-spark direction")
    store.write("cross", spark.createDataFrame([(1, "a", 1.0, "x")], SCHEMA))
    assert spark.read.format("delta").load(str(store.path("cross"))).count() == 1


def test_asking_for_delta_spark_without_jars_says_what_to_do(spark, tmp_path):
    with pytest.raises(TableError, match="not on Spark's classpath.*tables.backend=delta-rs"):
        TableStore(tmp_path, spark, backend="delta-spark")


def test_bad_names_and_missing_tables(spark, store):
    df = spark.createDataFrame([(1, "a", 1.0, "x")], SCHEMA)
    with pytest.raises(TableError, match="table name '../evil' is not valid"):
        store.write("../evil", df)
    with pytest.raises(TableError, match="table 'nope' does not exist"):
        store.read("nope")
    with pytest.raises(TableError, match="write mode 'upsert'"):
        store.write("t", df, "upsert")
    with pytest.raises(TableError, match="key columns \\['nope'\\]"):
        store.merge("t", df, ["nope"])


def test_plain_parquet_with_row_group_and_file_size_controls(spark, tmp_path):
    df = spark.range(0, 5000, numPartitions=2).select(F.col("id"), (F.col("id") % 7).alias("bucket"))
    out = TableStore.write_parquet(df, tmp_path / "shards", max_records_per_file=1000)
    files = sorted(out.glob("*.parquet"))
    assert len(files) == 6  # 2 partitions of 2500 rows, at most 1000 rows per file
    assert all(pq.read_metadata(f).num_rows <= 1000 for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 5000
    # overwrite is a swap: the old output stays whole if the new write fails
    @F.udf("long")
    def boom(x):
        raise RuntimeError("injected parquet failure")

    with pytest.raises(Exception, match="injected parquet failure"):
        TableStore.write_parquet(df.select(boom("id").alias("id")), out)
    assert sum(pq.read_metadata(f).num_rows for f in sorted(out.glob("*.parquet"))) == 5000
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]


def test_row_group_size_is_controlled(spark, tmp_path):
    df = spark.range(0, 200_000, numPartitions=1).select(
        F.col("id"), F.sha2(F.col("id").cast("string"), 256).alias("payload"))
    small = TableStore.write_parquet(df, tmp_path / "small", row_group_bytes=1 << 20)
    large = TableStore.write_parquet(df, tmp_path / "large", row_group_bytes=64 << 20)
    groups = {name: sum(pq.read_metadata(f).num_row_groups for f in path.glob("*.parquet"))
              for name, path in (("small", small), ("large", large))}
    assert groups["large"] == 1 and groups["small"] >= 5  # ~15 MB of data in 1 MB row groups
