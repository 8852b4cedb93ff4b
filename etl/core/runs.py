"""Run records, quarantine and reconciliation, one module for every stage that reads rows and writes some
(text ETL, image ETL, batch scoring).

* every run has an id (``new_run_id``) and appends one row to its stage's runs table — ``etl_runs`` for
  both ETLs (``ETL_RUNS_SCHEMA``, a ``stage`` column tells them apart), ``score_runs`` for scoring — written
  last, after every commit it counts, with ``status`` succeeded / failed_* / failed and the error in one
  line (``one_line``);
* rows that cannot be used go to a ``quarantine_<name>`` table with a reason (``quarantine``), their raw
  record kept readable (``quarantined_raw``);
* the counts reconcile: rows read = kept + quarantined (+ already present / skipped) — ``Tally``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.core.logs import get_logger

log = get_logger(__name__)

from etl.core.catalog import ETL_RUNS  # noqa: F401  (re-exported: the run records live in it)

ETL_RUNS_SCHEMA = ("run_id string, dataset string, status string, rows_read long, rows_kept long, "
                   "rows_quarantined long, rows_already_present long, quarantine_rate double, reasons string, "
                   "rows_per_split string, tokenizer string, tokenizer_sha256 string, silver_version long, "
                   "shards_dir string, seconds double, error string, bronze_table string, bronze_version long, "
                   "stage string, stage_seconds string, peak_rss_mb string")


@dataclass
class EtlReport:
    """What an ETL run did, as ``lakedl etl`` prints it and its ``etl_runs`` row records it (``record``): the
    fields every stage has; the text and image ETLs add their own (etl/text, etl/images)."""
    run_id: str
    dataset: str
    status: str = "running"
    rows_read: int = 0
    rows_kept: int = 0
    rows_quarantined: int = 0
    rows_already_present: int = 0
    quarantine_rate: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    shards_dir: str = ""
    seconds: float = 0.0
    error: str | None = None

    def reconcile(self, tally: Tally) -> None:
        """The counts of ``tally`` (read = kept + quarantined + already present)."""
        self.rows_read, self.rows_kept, self.rows_quarantined = tally.read, tally.kept, tally.quarantined
        self.rows_already_present, self.quarantine_rate = tally.already_present, round(tally.rate, 6)
        self.reasons = tally.reasons

    def record(self, stage: str) -> dict:
        """The ``etl_runs`` columns this report fills (``ETL_RUNS_SCHEMA``; the others stay empty)."""
        names = {c.split()[0] for c in ETL_RUNS_SCHEMA.split(", ")}
        return {**{k: v for k, v in asdict(self).items() if k in names and k not in ("seconds", "error")},
                "stage": stage}


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


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


@dataclass
class Tally:
    """A run's reconciliation: every row read is kept, quarantined (with a reason) or already present."""

    read: int = 0
    quarantined: int = 0
    already_present: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.read - self.quarantined - self.already_present

    @property
    def rate(self) -> float:
        return self.quarantined / self.read if self.read else 0.0

    @classmethod
    def of(cls, counts: Mapping[tuple[str | None, bool], int]) -> Tally:
        """From ``{(reason or None, already present?): rows}`` (a groupBy's handful of rows)."""
        reasons: dict[str, int] = {}
        for (reason, _), n in sorted(counts.items(), key=lambda kv: str(kv[0])):
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + n
        already = sum(n for (reason, present), n in counts.items() if reason is None and present)
        return cls(sum(counts.values()), sum(reasons.values()), already, reasons)


def quarantined_raw(col: str) -> list[Column]:
    """A quarantined record as every reader can show it: ``raw`` as valid UTF-8 (bytes that are not become
    U+FFFD) and, only for such records, ``raw_bytes``, the record's exact bytes."""
    valid = F.is_valid_utf8(col)
    return [F.when(valid, F.col(col)).otherwise(F.make_valid_utf8(col)).alias(col),
            F.when(~valid, F.col(col).cast("binary")).alias(f"{col}_bytes")]


def quarantine(store, table: str, bad: DataFrame, run_id: str | None,
               keys: tuple[str, ...] = ("quarantine_key",)) -> None:
    """Merge ``bad`` rows (keyed by ``keys``, with a reason) into ``table``, once per key: a rerun over the
    same input adds nothing; columns a newer version adds are added to an older table."""
    bad = bad.withColumn("run_id", F.lit(run_id).cast("string")).withColumn("quarantined_at", F.current_timestamp())
    store.merge(table, bad, list(keys), update_matched=False, commit_info={"lakedl.run_id": str(run_id)},
                add_columns=True)


class StageClock:
    """Wall seconds of a run's stages, for its record (``stage_seconds``): ``with clock("encode_merge"): ...``.
    Spark evaluates lazily, so a stage is the action that ran in it (a count, a MERGE, a write), with the
    transformations that action pulled in; a stage timed twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def _peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set (VmHWM, Linux) in MB; None where it cannot be read."""
    try:
        for line in open(f"/proc/{pid}/status", encoding="ascii", errors="replace"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_rss_by_kind() -> dict[str, float]:
    """Peak RSS (MB, the largest process of each kind, over its life so far) of this host's processes of the
    job: ``driver_python`` (this process), ``jvm`` (the Spark JVM this process started: the driver, and in
    local mode the executors) and ``python_workers`` (its PySpark daemon and workers). Linux /proc only; on
    a cluster the executors' own processes are on other hosts (Spark's executor metrics show them)."""
    import os

    out: dict[str, float] = {}
    mine = _peak_rss_mb(os.getpid())
    if mine is not None:
        out["driver_python"] = mine
    try:
        import psutil

        children = psutil.Process().children(recursive=True)
    except Exception:  # no psutil or no /proc: the driver's own figure is still worth recording
        return out
    for proc in children:
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:
            continue
        kind = "jvm" if "java" in proc.name() else "python_workers" if "pyspark" in cmd else None
        peak = _peak_rss_mb(proc.pid) if kind else None
        if peak is not None:
            out[kind] = max(out.get(kind, 0.0), peak)
    return out


def record_run(store, table: str, record: Mapping, schema: str) -> None:
    """Append one run record to ``table`` (dicts become JSON text; columns ``schema`` has and an older table
    lacks are added); ``finished_at`` and ``peak_rss_mb``, where the schema has them, are filled in now."""
    names = [c.split()[0] for c in schema.split(", ")]
    if "finished_at" in names and not record.get("finished_at"):
        from datetime import datetime, timezone

        record = {**record, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if "peak_rss_mb" in names and not record.get("peak_rss_mb"):
        record = {**record, "peak_rss_mb": peak_rss_by_kind()}
    row = tuple(json.dumps(v) if isinstance(v, (dict, list)) else v for v in (record.get(n) for n in names))
    store.write(table, store._spark().createDataFrame([row], schema), "append",
                commit_info={"lakedl.run_id": str(record.get("run_id"))}, add_columns=True)


@contextmanager
def recorded_run(store, table: str, record: dict, schema: str) -> Iterator[dict]:
    """Yield ``record`` to fill; when the block ends append it to ``table``: ``status`` as the block set it
    (default succeeded), or ``failed`` with the error in one line when it raised (then the exception goes
    on; a record that cannot be written then is logged, not raised over the cause)."""
    started = time.perf_counter()
    record.setdefault("status", "running")
    try:
        yield record
    except BaseException as exc:
        if record["status"] in ("running", "succeeded"):
            record["status"] = "failed"
        record.setdefault("error", None)
        record["error"] = record["error"] or one_line(exc, 2000)
        record["seconds"] = round(time.perf_counter() - started, 3)
        try:
            record_run(store, table, record, schema)
        except Exception:  # e.g. the disk is full: the failure itself must still be told
            log.exception("could not record the failed run", extra={"run_id": record.get("run_id")})
        raise
    if record["status"] == "running":
        record["status"] = "succeeded"
    record["seconds"] = round(time.perf_counter() - started, 3)
    record_run(store, table, record, schema)
