"""The one place a SparkSession is made.

Embedded (a plain ``python``/``lakedl`` run): ``local[*]`` with Arrow on, the UI off, few shuffle
partitions and the driver bound to 127.0.0.1. Under ``spark-submit`` (or a notebook/shell that already
has a JVM gateway) the session the cluster gives is used as is: master, resources and cluster
settings are never overridden. Executors always run this interpreter (``PYSPARK_PYTHON``).

Spark Connect: with ``spark.remote`` (``sc://host:port``) or ``$SPARK_REMOTE`` set, the session is a Connect
client of that server; this process starts no JVM, and the server's settings are used as they are. Every
ETL, table and scoring path works on either kind of session (no SparkContext, RDD or ``_jvm`` on them);
what needs a SparkContext (Horovod on Spark) refuses with :func:`require_classic`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from etl.core.config import SparkSettings
from etl.core.logs import get_logger


def spill(df):
    """``df`` persisted where a job that reads it twice keeps it: on the executors' local disk, not in the JVM
    heap (DISK_ONLY). Kept in memory (MEMORY_AND_DISK), a 3.5M-row bronze load ran a 1 GB driver out of heap
    while the cache competed with the tasks building its batches; on disk the heap a job needs does not grow
    with its input (bench/scale.py). Each cached batch is built on the heap, so the embedded session also
    builds them of 1,000 rows (``embedded_conf``), not 10,000: with 10,000 the 100x text ETL still ran out."""
    from pyspark.storagelevel import StorageLevel

    return df.persist(StorageLevel.DISK_ONLY)

log = get_logger(__name__)

DELTA_EXTENSION_CLASS = "io.delta.sql.DeltaSparkSessionExtension"


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def require_classic(spark, what: str, alternative: str) -> None:
    """Refuse ``what`` on a Spark Connect session, naming what to use instead."""
    if is_connect(spark):
        from etl.core.errors import LakedlError

        raise LakedlError(f"{what} needs a SparkContext, which a Spark Connect session does not have; "
                          f"{alternative}")


def remote_url(settings: SparkSettings) -> str | None:
    """The Spark Connect server to use: ``spark.remote`` in the config, else ``$SPARK_REMOTE``, else none."""
    return settings.remote or os.environ.get("SPARK_REMOTE") or None


def under_spark_submit() -> bool:
    """True when a JVM was started for us (spark-submit, pyspark shell, cluster notebooks)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def ensure_python_env() -> None:
    """Make Spark's Python workers run this interpreter unless the user chose one."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def embedded_conf(settings: SparkSettings) -> dict[str, str]:
    """The settings an embedded session starts with (user's ``spark.conf`` entries win)."""
    conf = {
        "spark.app.name": settings.app_name,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_max_records_per_batch),
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.default.parallelism": str(max(settings.shuffle_partitions, 2)),
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # a persisted frame is built in batches of this many rows on the heap (default 10,000): with review text
        # and the raw record per row, 10,000-row batches ran a 1 GB driver out of heap at 3.5M rows (spill())
        "spark.sql.inMemoryColumnarStorage.batchSize": "1000",
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "spark.pyspark.driver.python": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
    }
    if settings.master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update(settings.conf)
    return conf


def get_spark(settings: SparkSettings | None = None):
    """Return the active SparkSession, or start the embedded one from ``settings``."""
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    ensure_python_env()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    remote = remote_url(settings)
    if remote:
        spark = SparkSession.builder.remote(remote).getOrCreate()
        log.info("connected to Spark Connect", extra={"remote": remote, "version": spark.version})
        return spark
    if under_spark_submit():
        spark = SparkSession.builder.getOrCreate()
        log.info("using the session spark-submit provided", extra={"master": spark.sparkContext.master})
        return spark
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # bind to loopback only
    builder = SparkSession.builder.master(settings.master)
    for key, value in embedded_conf(settings).items():
        builder = builder.config(key, value)
    with _jvm_stderr_filtered():
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("started embedded Spark", extra={"master": settings.master, "version": spark.version})
    return spark


# Printed by the JVM itself at start (Spark 4's launcher always adds --add-modules=jdk.incubator.vector, for
# its vectorised BLAS): a notice, not a problem, and the only "WARNING" of a clean run.
_JVM_NOTICES = (b"WARNING: Using incubator modules: jdk.incubator.vector\n",)


@contextlib.contextmanager
def _jvm_stderr_filtered() -> Iterator[None]:
    """Start the embedded JVM with its stderr (fd 2) on a pipe that a thread copies to ours, dropping the
    JVM's start-up notices (``_JVM_NOTICES``); everything else — Spark's log lines, progress bars, Python
    workers' output — passes through unchanged, as it is written."""
    import threading

    try:
        read_end, write_end = os.pipe()
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect (an embedding host): start the JVM as is
        yield
        return

    def copy() -> None:
        pending = True
        while chunk := os.read(read_end, 65536):
            if pending:
                for notice in _JVM_NOTICES:
                    if notice in chunk:
                        chunk, pending = chunk.replace(notice, b"", 1), False
            if chunk:
                os.write(target, chunk)
        os.close(read_end)

    target = os.dup(saved)  # where the copy goes; ours to close with the thread
    sys.stderr.flush()
    os.dup2(write_end, 2)  # the JVM inherits the pipe as its stderr
    os.close(write_end)
    threading.Thread(target=copy, name="jvm-stderr", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # this process writes to the terminal again; only the JVM keeps the pipe
        os.close(saved)


def has_delta_jars(spark) -> bool:
    """Whether delta-spark's classes are on the driver's classpath (cluster with Delta installed). Through
    Spark Connect the server's classpath cannot be probed: Delta counts as there when the server's session
    has Delta's SQL extension configured."""
    if is_connect(spark):
        try:
            return DELTA_EXTENSION_CLASS in (spark.conf.get("spark.sql.extensions", "") or "")
        except Exception:  # a server that hides its static settings
            return False
    try:
        loader = spark._jvm.java.lang.Thread.currentThread().getContextClassLoader()
        loader.loadClass(DELTA_EXTENSION_CLASS)
        return True
    except Exception:  # py4j raises Py4JJavaError wrapping ClassNotFoundException
        return False


@contextlib.contextmanager
def job_description(spark, text: str) -> Iterator[None]:
    """Label the Spark jobs started inside the block (shown in the Spark UI and history server). A Connect
    session has no job descriptions: its jobs carry the text as an operation tag instead."""
    if is_connect(spark):
        tag = "lakedl " + "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100]
        spark.addTag(tag)
        try:
            yield
        finally:
            spark.removeTag(tag)
        return
    sc = spark.sparkContext
    previous = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setJobDescription(previous)


@contextlib.contextmanager
def settled_on_failure(spark, timeout: float = 60.0) -> Iterator[None]:
    """Tag the Spark jobs started inside the block; when the block raises, cancel them and wait until
    none of their tasks is still running before the exception leaves.

    A failed job is reported to the driver while its stage's other tasks are still being killed: a task
    that is mid-write can create its output folders after the driver has cleaned them up. Cleanup that
    runs after this block sees no more writes. Through Spark Connect it interrupts the block's operations
    (the server stops their tasks; there is no status tracker to wait on)."""
    import uuid

    tag = f"lakedl-{uuid.uuid4().hex}"
    if is_connect(spark):
        spark.addTag(tag)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                spark.interruptTag(tag)
            raise
        finally:
            spark.removeTag(tag)
        return
    sc = spark.sparkContext
    sc.addJobTag(tag)
    try:
        yield
    except BaseException:
        _cancel_and_wait(sc, tag, timeout)
        raise
    finally:
        sc.removeJobTag(tag)


def _cancel_and_wait(sc, tag: str, timeout: float) -> None:
    import time

    sc.cancelJobsWithTag(tag)
    tracker = sc.statusTracker()
    job_ids = list(sc._jsc.sc().statusTracker().getJobIdsForTag(tag))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = [s for j in job_ids if (info := tracker.getJobInfo(j)) for s in info.stageIds]
        if not any((info := tracker.getStageInfo(s)) and info.numActiveTasks > 0 for s in stages):
            return
        time.sleep(0.05)
    log.warning("tasks still running after a failed job", extra={"tag": tag, "waited_s": timeout})
