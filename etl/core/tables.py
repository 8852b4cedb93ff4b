"""The project's table store: write, append, merge, read and time-travel Delta tables.

Two backends write the same on-disk Delta protocol:

* ``delta-rs`` (embedded default, no JVM jars): Spark's executors write Parquet files in parallel
  into a staging directory; the driver moves them into the table and commits them all in ONE Delta
  transaction with delta-rs. A job that fails before the commit leaves the table's version and
  contents untouched (uncommitted files are removed; a killed driver leaves only unreferenced files
  that ``VACUUM`` clears). MERGE is copy-on-write computed by Spark: the files holding matched rows
  are rewritten and committed as removes + adds in one transaction. (delta-rs's own MERGE writes
  Parquet with Utf8View columns that pyarrow 14 cannot open, so it is not used.)
* ``delta-spark`` (clusters that ship Delta: Databricks, EMR, ``--packages io.delta:delta-spark``):
  plain ``format("delta")`` writes and SQL ``MERGE INTO``. It is chosen automatically when the
  Delta classes are on the classpath.

Concurrent writers keep Delta's guarantees (docs/reliability.md). A MERGE or an overwrite commits
against the snapshot it read and nothing else: its commit is pinned to the next version, so a concurrent
commit makes it fail instead of being rebased over (delta-rs rebases a commit of add actions as a blind
append, which would insert rows the MERGE's anti-join never saw). The store then re-reads the table and
recomputes the whole MERGE, a bounded number of times, or raises ``TableConflict``. Plain appends (run
records) are blind appends and are rebased, as Delta does; a table created by two writers at once is
created by one and appended to by the other.

Reads of version numbers, history and small driver-side tables go through delta-rs for both, reading
Parquet files with pyarrow directly (``DeltaTable.to_pyarrow_table`` can crash at exit with pyarrow 14).
Deletion vectors stay off, so both engines can read every table.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from etl.core.errors import LakedlError
from etl.core.lease import pid_alive
from etl.core.logs import get_logger
from etl.core.spark import has_delta_jars, settled_on_failure, spill

log = get_logger(__name__)

WriteMode = Literal["append", "overwrite"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Every table keeps a change data feed (readers: ``read_changes``), so consumers such as scoring read only what
# changed since the version they last consumed.
_TABLE_PROPERTIES = {"delta.enableDeletionVectors": "false", "delta.enableChangeDataFeed": "true"}
_CDF = "delta.enableChangeDataFeed"
CONFLICT_RETRIES = 8
# Delta's (delta-spark's) conflict exceptions, and delta-rs's "created meanwhile": all mean "re-read and retry"
_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
              "ConcurrentTransactionException", "MetadataChangedException", "ProtocolChangedException",
              "ConcurrentWriteException", "A Delta Lake table already exists", "DELTA_PATH_EXISTS",
              "PATH_ALREADY_EXISTS")


class TableError(LakedlError, RuntimeError):
    """A table operation that cannot proceed; the message says which table and what to do."""


class TableConflict(TableError):
    """Concurrent writers committed to the table on every attempt; nothing of this write was committed."""


class ChangeFeedUnavailable(TableError):
    """The change data feed cannot be read for the versions asked: the feed was off for one of them, or a
    commit or a data file it needs has been cleaned up (log retention, VACUUM). Read the table whole instead."""


def _is_conflict(exc: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, CommitFailedError) or any(c in str(exc) for c in _CONFLICTS)


def check_names(*names: str) -> None:
    """Refuse an invalid table name before anything is written."""
    for name in names:
        _check_name(name)


@dataclass(frozen=True)
class MergeResult:
    version: int
    inserted: int
    updated: int
    deleted: int = 0
    committed: bool = True  # False: nothing to change, or the merge's transaction was committed before


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TableError(f"table name {name!r} is not valid: use letters, digits and '_' (e.g. bronze_reviews)")
    return name


def local_path(uri: str) -> str:
    """``file:/x``, ``file:///x`` (Spark, delta-rs) or a plain path → a plain local path."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def spark_to_arrow_schema(struct) -> pa.Schema:
    """Arrow schema of a Spark schema as Delta stores it (timestamps in microseconds, UTC)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(struct)
    fields = []
    for f in schema:
        typ = f.type
        if pa.types.is_timestamp(typ):
            typ = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(f.name, typ, f.nullable))
    return pa.schema(fields)


def arrow_to_spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    plain = pa.schema(
        [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type, f.nullable) for f in schema]
    )
    return from_arrow_schema(plain)


class TableStore:
    """Delta tables under one root directory, addressed by name."""

    def __init__(self, root: str | os.PathLike, spark=None, backend: str = "auto",
                 conflict_retries: int = CONFLICT_RETRIES) -> None:
        self.root = Path(root).absolute()
        self.spark = spark
        self.backend = self._pick_backend(backend)
        self.conflict_retries = conflict_retries
        self.conflicts = 0  # commits this store lost to a concurrent writer and redid (for tests and logs)

    check_names = staticmethod(check_names)

    @classmethod
    def from_config(cls, cfg, spark=None) -> TableStore:
        return cls(cfg.paths.tables_dir, spark=spark, backend=cfg.tables.backend)

    def _pick_backend(self, requested: str) -> str:
        if requested not in ("auto", "delta-rs", "delta-spark"):
            raise TableError(f"tables.backend={requested!r}: expected auto, delta-rs or delta-spark")
        if requested == "delta-rs":
            return requested
        jars = self.spark is not None and has_delta_jars(self.spark)
        if requested == "delta-spark" and not jars:
            raise TableError(
                "tables.backend=delta-spark but delta-spark's classes are not on Spark's classpath: start Spark "
                "with Delta (Databricks/EMR, or --packages io.delta:delta-spark_2.13:4.0.0 plus "
                "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension), or set tables.backend=delta-rs"
            )
        return "delta-spark" if jars else "delta-rs"

    # -- naming ----------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(str(self.path(name)))

    def _table(self, name: str, version: int | None = None):
        from deltalake import DeltaTable

        if not self.exists(name):
            raise TableError(f"table {name!r} does not exist under {self.root}")
        return DeltaTable(str(self.path(name)), version=version)

    def _spark(self):
        if self.spark is None:
            raise TableError("this operation runs on Spark: create the TableStore with spark=get_spark(...)")
        return self.spark

    # -- metadata (same for both backends: it is the on-disk protocol) ---------------------------
    def version(self, name: str) -> int:
        return self._table(name).version()

    def history(self, name: str) -> list[dict]:
        return self._table(name).history()

    def schema(self, name: str, version: int | None = None) -> pa.Schema:
        return pa.schema(self._table(name, version).schema().to_arrow())

    def partition_columns(self, name: str) -> list[str]:
        return list(self._table(name).metadata().partition_columns)

    # -- writes ----------------------------------------------------------------------------------
    def write(self, name: str, df, mode: WriteMode = "append", partition_by: Sequence[str] | None = None,
              commit_info: Mapping[str, str] | None = None, add_columns: bool = False) -> int:
        """Append to or overwrite table ``name`` with Spark DataFrame ``df``; returns the new version.
        ``commit_info`` (e.g. a run id) is stored in the commit and shown by ``history``. ``add_columns``
        adds the DataFrame's columns the table lacks (nullable) first, e.g. a run record's new field."""
        if mode not in ("append", "overwrite"):
            raise TableError(f"write mode {mode!r}: expected 'append' or 'overwrite'")
        _check_name(name)
        partition_by = list(partition_by or [])
        missing = [c for c in partition_by if c not in df.columns]
        if missing:
            raise TableError(f"table {name!r}: partition columns {missing} are not in the DataFrame")
        info = {"lakedl.operation": f"write-{mode}", **(commit_info or {})}

        def attempt() -> int:
            if add_columns:
                self._add_columns(name, df)
            if self.backend == "delta-spark":
                return self._spark_write(name, df, mode, partition_by, info)
            return self._rs_write(name, df, mode, partition_by, info)

        return self._retrying(name, f"write-{mode}", attempt)

    def _retrying(self, name: str, what: str, attempt: Callable):
        """Run ``attempt`` until it commits without a concurrent commit in its way: each try re-reads the
        table, so what it writes is computed from the snapshot it commits against."""
        for tries in range(1, self.conflict_retries + 2):
            try:
                return attempt()
            except Exception as exc:
                if not _is_conflict(exc):
                    raise
                if tries > self.conflict_retries:
                    raise TableConflict(
                        f"{what} into {name!r}: a concurrent writer committed first on each of {tries} tries; "
                        "nothing of this write was committed: run it again, or run fewer writers at once") from exc
                self.conflicts += 1
                log.info("concurrent commit: re-reading and retrying", extra={"table": name, "operation": what,
                                                                             "try": tries})
                time.sleep(random.uniform(0.05, 0.3) * min(2 ** tries, 16))
        raise AssertionError("unreachable")

    def merge(self, name: str, df, keys: Sequence[str], update_matched: bool = True,
              commit_info: Mapping[str, str] | None = None, add_columns: bool = False, delete=None,
              txn: tuple[str, int] | None = None) -> MergeResult:
        """Upsert ``df`` into ``name`` on ``keys``: matched rows are updated (or kept when
        ``update_matched`` is False), unmatched rows inserted. Re-running with the same rows adds nothing.
        Source keys must be unique. A missing table is created from ``df``. Concurrent merges of the same
        keys insert each key once: a merge that loses the commit race is recomputed (see the module doc),
        and its result counts what it really inserted.

        ``delete`` (a DataFrame of ``keys``) removes those rows in the same commit (a key also in ``df`` is
        updated, not deleted). ``txn=(app_id, version)`` records a Delta application transaction in the commit;
        a table whose ``app_id`` is already at ``version`` or later is left alone (the merge was done), which
        makes a retried job commit once. Both need the delta-rs backend."""
        _check_name(name)
        keys = list(keys)
        if not keys:
            raise TableError(f"merge into {name!r}: give at least one key column")
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise TableError(f"merge into {name!r}: key columns {missing} are not in the source DataFrame")
        info = {"lakedl.operation": "merge", "lakedl.keys": ",".join(keys), **(commit_info or {})}
        if (delete is not None or txn is not None) and self.backend == "delta-spark":
            raise TableError(f"merge into {name!r}: deletes and application transactions in a merge need "
                             "tables.backend=delta-rs")

        def attempt() -> MergeResult:
            done = None if txn is None else self.transaction_version(name, txn[0])
            if done is not None and done >= txn[1]:
                log.info("merge already committed", extra={"table": name, "app_id": txn[0], "txn": txn[1]})
                return MergeResult(self.version(name), 0, 0, committed=False)
            if add_columns:
                self._add_columns(name, df)
            if not self.exists(name):  # created by one writer; a second one meets "exists" and merges
                if self.backend == "delta-spark":
                    version = self._spark_write(name, df, "append", [], info, create=True)
                    return MergeResult(version, self.count(name, version), 0)
                rows = self._rs_create(name, df, [], info, txn)
                return MergeResult(0, rows, 0)
            if self.backend == "delta-spark":
                return self._spark_merge(name, df, keys, update_matched, info)
            return self._rs_merge(name, df, keys, update_matched, info, delete, txn)

        return self._retrying(name, "merge", attempt)

    def _add_columns(self, name: str, df) -> None:
        """Add ``df``'s columns that table ``name`` lacks, as nullable columns (schema evolution)."""
        if not self.exists(name):
            return
        have = set(self.schema(name).names)
        new = [f for f in spark_to_arrow_schema(df.schema) if f.name not in have]
        if not new:
            return
        if self.backend == "delta-spark":
            cols = ", ".join(f"`{f.name}` {df.schema[f.name].dataType.simpleString()}" for f in new)
            self._spark().sql(f"ALTER TABLE delta.`{self.path(name)}` ADD COLUMNS ({cols})")
        else:
            from deltalake.schema import Field

            self._table(name).alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in new])
        log.info("added columns", extra={"table": name, "columns": [f.name for f in new]})

    # -- reads -----------------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None):
        """Spark DataFrame of table ``name`` (at ``version`` for time travel)."""
        spark = self._spark()
        if self.backend == "delta-spark":
            reader = spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return reader.load(str(self.path(name)))
        frame, _ = self._snapshot_frame(name, self._table(name, version))
        return frame

    def read_added(self, name: str, since: int | None, version: int | None = None):
        """The rows of table ``name`` at ``version`` (default: now) that are in data files added after version
        ``since`` (None: every row), and the version read. For a table that only grows (bronze: appends and
        insert-only merges) these are exactly the rows added since ``since``; a file rewritten since (an
        update, a compaction) brings its rows again, so a consumer must be idempotent by key, as silver is."""
        if self.backend == "delta-spark":  # no file listing through Spark: the difference of two snapshots
            now = version if version is not None else self.version(name)
            current = self.read(name, now)
            return (current if since is None else current.exceptAll(self.read(name, since))), now
        table = self._table(name, version)
        now = table.version()
        if since is None:
            frame, _ = self._snapshot_frame(name, table)
            return frame, now
        _, before = self._snapshot_files(name, self._table(name, since))
        base, files = self._snapshot_files(name, table)
        added = sorted(set(files) - set(before))
        spark = self._spark()
        schema = arrow_to_spark_schema(pa.schema(table.schema().to_arrow()))
        if not added:
            return spark.createDataFrame([], schema), now
        return spark.read.schema(schema).option("basePath", base).parquet(*added), now

    # -- change data feed ---------------------------------------------------------------------------
    def transaction_version(self, name: str, app_id: str) -> int | None:
        """The version of application ``app_id``'s last transaction committed to table ``name`` (None: none)."""
        if not self.exists(name):
            return None
        return self._table(name).transaction_version(app_id)

    def enable_change_feed(self, name: str) -> int:
        """Turn the change data feed on for table ``name`` (one that lakedl did not create) from its next
        version; returns the table's version after it (unchanged when the feed was on already)."""
        table = self._table(name)
        if (table.metadata().configuration or {}).get(_CDF) != "true":
            table.alter.set_table_properties({_CDF: "true"})
            log.info("change data feed on", extra={"table": name})
        return self.version(name)

    def read_changes(self, name: str, since: int, version: int | None = None):
        """The change data feed of table ``name`` from version ``since`` (exclusive) to ``version`` (default:
        now): a Spark DataFrame of the table's columns plus ``_change_type`` (insert, delete, update_preimage,
        update_postimage) and ``_commit_version``, and the version read up to. As the Delta protocol reads it:
        a commit with change files (delta-rs's and Delta's DELETE/UPDATE/MERGE write them) is its change files;
        any other commit's added data files are inserts and its removed ones deletes (a copy-on-write rewrite
        shows a kept row as a delete and an insert of the same values; ``dataChange=false`` commits such as
        compactions change nothing). Spark reads the files, so a change of a few files costs a few files
        whatever the table's size. Raises ``ChangeFeedUnavailable`` when the feed was off at ``since`` or
        after it, or a commit or file it needs is gone."""
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        now = self.version(name) if version is None else version
        spark = self._spark()
        if self.backend == "delta-spark":
            frame = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", since + 1)
                     .option("endingVersion", now).load(str(self.path(name))))
            return frame.drop("_commit_timestamp"), now
        if (self._table(name, since).metadata().configuration or {}).get(_CDF) != "true":
            raise ChangeFeedUnavailable(f"table {name!r} has no change data feed at version {since} (`lakedl tables "
                                        f"change-feed {name}` turns it on from the next version)")
        table_dir = self.path(name)
        table_schema = arrow_to_spark_schema(self.schema(name, now))
        with_type = T.StructType([*table_schema.fields, T.StructField("_change_type", T.StringType())])
        frames = []
        for v in range(since + 1, now + 1):
            log_file = table_dir / "_delta_log" / f"{v:020d}.json"
            try:
                actions = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
            except FileNotFoundError:
                raise ChangeFeedUnavailable(f"table {name!r}: commit {v} is no longer in its log") from None
            for a in actions:
                if "metaData" in a and (a["metaData"].get("configuration") or {}).get(_CDF) != "true":
                    raise ChangeFeedUnavailable(f"table {name!r}: the change data feed is off at version {v}")
            cdc = [a["cdc"]["path"] for a in actions if "cdc" in a]
            if cdc:
                groups = [(cdc, None, table_dir / "_change_data")]
            else:
                groups = [([a[k]["path"] for a in actions if k in a and a[k].get("dataChange", True)], kind, table_dir)
                          for k, kind in (("add", "insert"), ("remove", "delete"))]
            for paths, kind, base in groups:
                if not paths:
                    continue
                files = [str(table_dir / unquote(p)) for p in paths]
                gone = [f for f in files if not os.path.exists(f)]
                if gone:
                    raise ChangeFeedUnavailable(f"table {name!r}: a data file of commit {v} was removed "
                                                f"(VACUUM?): {gone[0]}")
                reader = spark.read.schema(table_schema if kind else with_type).option("basePath", str(base))
                frame = reader.parquet(*files)
                if kind:
                    frame = frame.withColumn("_change_type", F.lit(kind))
                frames.append(frame.withColumn("_commit_version", F.lit(v).cast("long")))
        if not frames:
            return spark.createDataFrame([], T.StructType([*with_type.fields, T.StructField(
                "_commit_version", T.LongType())])), now
        out = frames[0]
        for frame in frames[1:]:
            out = out.unionByName(frame)
        return out, now

    def read_arrow(self, name: str, version: int | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Small tables on the driver (manifests, run logs, samples): pyarrow over the table's files."""
        table = self._table(name, version)
        schema = pa.schema(table.schema().to_arrow())
        base, files = self._snapshot_files(name, table)
        parts = table.metadata().partition_columns
        if not files:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        partitioning = pads.partitioning(pa.schema([schema.field(c) for c in parts]), flavor="hive") if parts else None
        data = pads.dataset(files, schema=schema, format="parquet", partitioning=partitioning,
                            partition_base_dir=base)
        return data.to_table(columns=list(columns) if columns else None)

    def count(self, name: str, version: int | None = None) -> int:
        table = self._table(name, version)
        return sum(pq.read_metadata(local_path(u)).num_rows for u in table.file_uris())

    # -- plain Parquet -----------------------------------------------------------------------------
    @staticmethod
    def write_parquet(df, path: str | os.PathLike, mode: WriteMode = "overwrite",
                      partition_by: Sequence[str] | None = None, max_records_per_file: int | None = None,
                      row_group_bytes: int | None = None) -> Path:
        """Plain Parquet output (e.g. shards petastorm reads). ``overwrite`` writes beside the target and
        swaps it in, so a failed job leaves the previous output whole."""
        target = Path(path).absolute()
        writer = df.write
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if max_records_per_file:
            writer = writer.option("maxRecordsPerFile", max_records_per_file)
        if row_group_bytes:
            writer = writer.option("parquet.block.size", row_group_bytes)
        if mode == "append":
            writer.mode("append").parquet(str(target))
            return target
        with swapped_in(target) as staging, settled_on_failure(df.sparkSession):
            writer.mode("error").parquet(str(staging))
        return target

    # -- delta-rs backend ---------------------------------------------------------------------------
    def _snapshot_files(self, name: str, table) -> tuple[str, list[str]]:
        """The table's root and its snapshot's data files, as paths readers can match against each other:
        delta-rs names local files under the symlink-resolved root, so a root under a symlink is resolved."""
        base, files = str(self.path(name)), [local_path(u) for u in table.file_uris()]
        if files and not urlparse(files[0]).scheme:
            base, files = os.path.realpath(base), [os.path.realpath(f) for f in files]
        return base, files

    def _snapshot_frame(self, name: str, table):
        """Spark DataFrame over one table snapshot's files (``_metadata.file_path`` tells the file)."""
        spark = self._spark()
        schema = arrow_to_spark_schema(pa.schema(table.schema().to_arrow()))
        base, files = self._snapshot_files(name, table)
        if not files:
            return spark.createDataFrame([], schema), False
        # A user schema that names the partition columns types the values parsed from the paths.
        return spark.read.schema(schema).option("basePath", base).parquet(*files), True

    def _commit_frame(self, name: str, df, partition_by: list[str], commit) -> int:
        """Executors write ``df`` as Parquet under ``<table>/_staging/<id>``; the driver moves the files
        into the table and calls ``commit(add_actions)`` once. On any failure the moved files are
        removed again, so the table is exactly as before. Returns the number of rows written."""
        from deltalake.transaction import AddAction

        spark = self._spark()
        table_dir = self.path(name)
        _clean_dead_staging(table_dir / "_staging")
        staging = table_dir / "_staging" / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        moved: list[Path] = []
        rows = 0
        try:
            spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            writer = df.write.mode("error")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            with settled_on_failure(spark):  # a failed job's other tasks stop writing before the cleanup
                writer.parquet(str(staging))
            actions = []
            for src in sorted(staging.rglob("*.parquet")):
                rel = src.relative_to(staging).as_posix()
                meta = pq.read_metadata(src)
                if meta.num_rows == 0:
                    continue
                dest = table_dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
                moved.append(dest)
                rows += meta.num_rows
                stat = dest.stat()
                actions.append(AddAction(
                    path=rel, size=stat.st_size, partition_values=_partition_values(rel),
                    modification_time=int(stat.st_mtime * 1000), data_change=True,
                    stats=json.dumps({"numRecords": meta.num_rows}),
                ))
            commit(actions)
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(table_dir / "_staging")
        return rows

    def _rs_write(self, name: str, df, mode: WriteMode, partition_by: list[str], info: Mapping[str, str]) -> int:
        from deltalake import DeltaTable

        if not self.exists(name):
            rows = self._rs_create(name, df, partition_by, info)
            log.info("committed", extra={"table": name, "mode": mode, "rows": rows, "version": 0})
            return 0
        table = DeltaTable(str(self.path(name)))
        schema = spark_to_arrow_schema(df.schema)
        current = list(table.metadata().partition_columns)
        if partition_by and partition_by != current:
            raise TableError(f"table {name!r} is partitioned by {current}, not {partition_by}")
        partition_by = current
        # An append is blind (delta-rs rebases it over concurrent commits, as Delta does); an overwrite
        # removes the files of the snapshot it read, so it is pinned to that snapshot.
        retries = 0 if mode == "overwrite" else None

        def commit(actions):
            table.create_write_transaction(actions, mode=mode, schema=schema, partition_by=partition_by or None,
                                           commit_properties=_commit_properties(info, retries=retries))
        rows = self._commit_frame(name, df, partition_by, commit)
        version = table.version() + 1 if mode == "overwrite" else self.version(name)
        log.info("committed", extra={"table": name, "mode": mode, "rows": rows, "version": version})
        return version

    def _rs_create(self, name: str, df, partition_by: list[str], info: Mapping[str, str],
                   txn: tuple[str, int] | None = None) -> int:
        """Create table ``name`` holding ``df`` as version 0; returns the rows written. A table created
        meanwhile by another writer fails the create ("already exists"), which ``_retrying`` retries."""
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions

        schema = spark_to_arrow_schema(df.schema)

        def commit(actions):
            create_table_with_add_actions(str(self.path(name)), Schema.from_arrow(schema), actions, mode="error",
                                          partition_by=partition_by or None, configuration=_TABLE_PROPERTIES,
                                          commit_properties=_commit_properties(info, txn))
        return self._commit_frame(name, df, partition_by, commit)

    def _rs_merge(self, name: str, df, keys: list[str], update_matched: bool, info: Mapping[str, str],
                  delete=None, txn: tuple[str, int] | None = None) -> MergeResult:
        """Copy-on-write MERGE computed by Spark: the files holding matched (or deleted) rows are rewritten
        with the updates and without the deleted rows, new rows are appended, and removes + adds are
        committed in one transaction pinned to the version after the snapshot that was read
        (``max_commit_retries=0``): a concurrent commit makes it fail with CommitFailedError, which ``merge``
        answers by recomputing against the new snapshot."""
        from deltalake import DeltaTable
        from deltalake.transaction import RemoveAction
        from pyspark.sql import functions as F

        table = DeltaTable(str(self.path(name)))
        target, has_files = self._snapshot_frame(name, table)
        missing = [c for c in target.columns if c not in df.columns]
        if missing:
            raise TableError(f"merge into {name!r}: source lacks the table's columns {missing}")
        source = df.select(*target.columns)
        # a left anti-join needs no distinct() of the right side: no shuffle of every key in the table
        inserts = source.join(target.select(*keys), keys, "left_anti") if has_files else source
        touched: list[str] = []
        hits = None
        gone = (delete.select(*keys).distinct().join(source.select(*keys), keys, "left_anti")
                if delete is not None else None)
        if (update_matched or gone is not None) and has_files:
            if update_matched:
                dup = source.groupBy(*keys).count().filter("count > 1").limit(1).collect()
                if dup:
                    raise TableError(f"merge into {name!r}: the source has several rows for key "
                                     f"{dup[0].asDict()} (keys must be unique to update)")
            matched = source.select(*keys) if update_matched else None
            rewrite = matched if gone is None else gone if matched is None else matched.unionByName(gone)
            located = target.withColumn("_file", F.col("_metadata.file_path"))
            # one pass over the table's keys finds the rows to rewrite and where they are; the rows to insert
            # are then the source's keys not among those few, instead of an anti-join against the whole table
            hits = spill(located.select(*keys, "_file").join(rewrite, keys, "left_semi"))
            touched = [r["_file"] for r in hits.select("_file").distinct().collect()]  # file names, not rows
            if matched is not None:
                inserts = source.join(hits.select(*keys), keys, "left_anti")
            if touched:  # only those files are read again, whole
                base = self._snapshot_files(name, table)[0]
                touched_rows = self._spark().read.schema(target.schema).option("basePath", base).parquet(*touched)
            else:
                touched_rows = self._spark().createDataFrame([], target.schema)
            op = F.lit("keep")
            if gone is not None:
                touched_rows = touched_rows.join(gone.withColumn("_gone", F.lit(True)), keys, "left")
                op = F.when(F.col("_gone").isNotNull(), F.lit("delete")).otherwise(op)
            if matched is not None:
                kept = touched_rows.join(matched, keys, "left_anti")
                # every matched target row takes the source's values (Delta's UPDATE SET * semantics)
                updates = touched_rows.select(*keys).join(source, keys, "inner").select(*target.columns)
                out = (kept.withColumn("_op", op).select(*target.columns, "_op")
                       .unionByName(updates.withColumn("_op", F.lit("update"))))
            else:
                out = touched_rows.withColumn("_op", op).select(*target.columns, "_op")
            out = out.unionByName(inserts.withColumn("_op", F.lit("insert")))
        else:
            out = inserts.withColumn("_op", F.lit("insert"))
        out = spill(out)
        try:
            ops = {r["_op"]: r["count"] for r in out.groupBy("_op").count().collect()}
            if not ops.get("insert") and not ops.get("update") and not ops.get("delete"):
                log.info("merge: nothing to change", extra={"table": name, "version": table.version()})
                if txn is None:
                    return MergeResult(table.version(), 0, 0, committed=False)
                table.create_write_transaction([], mode="append", schema=pa.schema(table.schema().to_arrow()),
                                               commit_properties=_commit_properties(info, txn, retries=0))
                return MergeResult(table.version() + 1, 0, 0)
            partition_by = list(table.metadata().partition_columns)
            now = int(time.time() * 1000)
            removes = []
            for uri in touched:
                rel = Path(local_path(uri)).relative_to(self.path(name)).as_posix()
                removes.append(RemoveAction(path=rel, data_change=True, deletion_timestamp=now,
                                            size=Path(local_path(uri)).stat().st_size,
                                            partition_values=_partition_values(rel)))
            schema = pa.schema(table.schema().to_arrow())
            written = out.filter(F.col("_op") != "delete").drop("_op")
            self._commit_frame(name, written, partition_by, lambda adds: table.create_write_transaction(
                [*adds, *removes], mode="append", schema=schema, partition_by=partition_by or None,
                commit_properties=_commit_properties(info, txn, retries=0)))
        finally:
            out.unpersist()
            if hits is not None:
                hits.unpersist()
        result = MergeResult(table.version() + 1, ops.get("insert", 0), ops.get("update", 0), ops.get("delete", 0))
        log.info("merged", extra={"table": name, "inserted": result.inserted, "updated": result.updated,
                                  "deleted": result.deleted, "version": result.version})
        return result

    # -- delta-spark backend (clusters with Delta installed) ---------------------------------------
    def _spark_write(self, name: str, df, mode: WriteMode, partition_by: list[str], info: Mapping[str, str],
                     create: bool = False) -> int:
        spark = self._spark()
        spark.conf.set("spark.databricks.delta.properties.defaults.enableDeletionVectors", "false")
        spark.conf.set("spark.databricks.delta.properties.defaults.enableChangeDataFeed", "true")
        # create=True: a table another writer created meanwhile fails this write instead of appending to it
        writer = (df.write.format("delta").mode("error" if create else mode)
                  .option("userMetadata", json.dumps(dict(info))))
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(str(self.path(name)))
        return self.version(name)

    def _spark_merge(self, name: str, df, keys: list[str], update_matched: bool,
                     info: Mapping[str, str]) -> MergeResult:
        spark = self._spark()
        spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", json.dumps(dict(info)))
        view = f"lakedl_merge_src_{uuid.uuid4().hex[:8]}"
        df.createOrReplaceTempView(view)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        matched = "WHEN MATCHED THEN UPDATE SET * " if update_matched else ""
        try:
            row = spark.sql(
                f"MERGE INTO delta.`{self.path(name)}` t USING {view} s ON {on} "
                f"{matched}WHEN NOT MATCHED THEN INSERT *"
            ).collect()[0].asDict()  # one row of metrics
        finally:
            spark.catalog.dropTempView(view)
        return MergeResult(self.version(name), int(row.get("num_inserted_rows", 0)),
                           int(row.get("num_updated_rows", 0)))


def _commit_properties(info: Mapping[str, str], txn: tuple[str, int] | None = None, retries: int | None = None):
    from deltalake import CommitProperties, Transaction

    return CommitProperties(custom_metadata=dict(info), max_commit_retries=retries,
                            app_transactions=[Transaction(txn[0], txn[1])] if txn else None)


def _partition_values(rel: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for part in rel.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep:
            value = unquote(value)
            values[unquote(key)] = None if value == _HIVE_NULL else value
    return values


@contextmanager
def swapped_in(target: str | os.PathLike) -> Iterator[Path]:
    """A staging path beside ``target`` (``.<name>.staging-<id>``) to write a directory into; when the block
    succeeds it replaces ``target`` (two renames), when it fails it is removed and ``target`` is untouched.
    Leftovers of a killed writer (``.<name>.staging-*``, ``.<name>.old-*``) are for the next run to remove
    (see ``remove_leftovers``)."""
    target = Path(target).absolute()
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed ``swapped_in`` writers left in ``folder``; call it while holding the folder's lock."""
    found = [*Path(folder).glob(".*.staging-*"), *Path(folder).glob(".*.old-*")]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def _clean_dead_staging(staging_root: Path) -> None:
    """Remove staging folders left by writers on this host whose process is gone (a killed run)."""
    if not staging_root.is_dir():
        return
    host = socket.gethostname()
    for entry in staging_root.iterdir():
        owner_host, _, rest = entry.name.rpartition("-")[0].rpartition("-")
        pid = rest if rest.isdigit() else ""
        if owner_host == host and pid and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass

