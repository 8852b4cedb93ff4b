"""Batch sentiment scoring on Spark: an iterator pandas UDF that loads an inference bundle (dl/serve/bundle.py)
once per Python worker and scores Arrow batches of texts with it.

    from dl.serve.score import score_frame
    scored = score_frame(spark.read.json("reviews/"), "bundles/lstm", text_col="text", id_col="review_id")

Each executor Python worker keeps the loaded bundle for the life of the worker (Spark reuses Python
workers across tasks by default, ``spark.python.worker.reuse``), so a model is loaded once per worker,
not once per batch or task. The batch size of the model is ``batch_size``; the Arrow batch size that
feeds the UDF is ``spark.sql.execution.arrow.maxRecordsPerBatch`` (``spark.arrow_max_records_per_batch``
in the config). A GPU is used when the worker has one."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from etl.core import catalog
from etl.core.runs import StageClock
from etl.core.runs import quarantine as quarantine_rows
from etl.core.spark import spill
from etl.text.config import MAX_CHARS

log = logging.getLogger(__name__)
_LOADED: dict[str, object] = {}  # bundle path + file times -> Bundle, per Python process
RUNS_SCHEMA = ("run_id string, source string, model_version string, status string, rows_read long, rows_scored long, "
               "rows_inserted long, rows_skipped long, rows_failed long, reasons string, watermark long, "
               "predictions_version long, seconds double, finished_at string, error string, stage_seconds string, "
               "peak_rss_mb string")


def loaded_bundle(path: str | os.PathLike):
    """The bundle at ``path``, loaded (and hash-checked) once per process: each executor Python worker,
    and the driver when it validates a bundle before a job. A re-exported bundle (new file times) loads anew."""
    root = Path(path).absolute()
    stamps = tuple((root / f).stat().st_mtime_ns if (root / f).exists() else None
                   for f in ("bundle.json", "weights.safetensors", "tokenizer.json"))
    key = f"{root}|{stamps}"
    if key not in _LOADED:
        from dl.serve.bundle import load_bundle

        _LOADED[key] = load_bundle(root)
    return _LOADED[key]


def output_schema(bundle_path: str | os.PathLike):
    """``label``, ``p_<class>`` per class and ``model_version``, read from bundle.json on the driver."""
    from pyspark.sql import types as T

    from dl.serve.bundle import BundleError, read_meta

    if not (Path(bundle_path) / "bundle.json").is_file():
        raise BundleError(f"{bundle_path}: not an inference bundle (no bundle.json); write one with "
                          "`lakedl bundle export --run RUN_DIR --out DIR`")
    labels = read_meta(bundle_path)["label_map"].get("sentiment", ["negative", "positive"])
    return T.StructType([T.StructField("label", T.StringType()),
                         *[T.StructField(f"p_{name}", T.DoubleType()) for name in labels],
                         T.StructField("model_version", T.StringType())])


def score_udf(bundle_path: str | os.PathLike, batch_size: int = 256):
    """The scoring UDF of one bundle: ``Iterator[pd.Series] -> Iterator[pd.DataFrame]``."""
    from pyspark.sql import functions as F

    path = str(Path(bundle_path).absolute())
    schema = output_schema(path)

    @F.pandas_udf(schema)
    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        import torch

        bundle = loaded_bundle(path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for texts in batches:
            yield bundle.predict(texts.fillna("").astype(str).tolist(), batch_size, device)

    return score


def make_predict_fn(bundle_path: str | os.PathLike, batch_size: int = 256):
    """The bundle for ``pyspark.ml.functions.predict_batch_udf``: a ``make_predict_fn`` whose ``predict`` takes a
    batch of texts (one string column; a null as "") and returns the columns of ``output_schema(bundle_path)``.
    The bundle loads once per Python worker; each batch is scored in slices of ``batch_size`` sorted by length,
    so give predict_batch_udf large batches::

        udf = predict_batch_udf(make_predict_fn(path), return_type=output_schema(path), batch_size=10_000)
        df.withColumn("prediction", udf("text"))
    """
    import numpy as np

    path = str(Path(bundle_path).absolute())

    def make():
        bundle = loaded_bundle(path)

        def predict(texts: np.ndarray) -> dict[str, np.ndarray]:
            out = bundle.predict([t if isinstance(t, str) else "" for t in texts.tolist()], batch_size)
            return {name: out[name].to_numpy() for name in out.columns}

        return predict

    return make


def score_frame(df, bundle_path: str | os.PathLike, text_col: str = "text", id_col: str = "review_id",
                batch_size: int = 256):
    """``df`` with ``id_col``, the label, the class probabilities and the model version."""
    from pyspark.sql import functions as F

    udf = score_udf(bundle_path, batch_size)
    return df.select(F.col(id_col), udf(F.col(text_col)).alias("_score")).select(id_col, "_score.*")


def checked_input(df, text_col: str = "text", id_col: str = "review_id", max_chars: int = MAX_CHARS):
    """``df`` with ``reason`` (null = scoreable) and ``quarantine_key`` (sha256 of id and text, stable
    across runs, defined for a null id too). The rules, first match wins, as in the text ETL:
    ``missing_review_id``, ``missing_text`` (null), ``empty_text`` (blank), ``text_too_long`` (more than
    ``max_chars`` characters). Texts longer than the model's max_len tokens are scored on their start,
    as training saw them."""
    from pyspark.sql import functions as F

    from etl.text.validate import REASON, blank, first_reason

    reason = first_reason((F.col(id_col).isNull() | blank(id_col), "missing_review_id"),
                          (F.col(text_col).isNull(), "missing_text"),
                          (blank(text_col), "empty_text"),
                          (F.length(text_col) > max_chars, "text_too_long"))
    key = F.sha2(F.concat_ws("\u0001", F.coalesce(F.col(id_col), F.lit("\u0000")),
                             F.coalesce(F.col(text_col), F.lit("\u0000"))), 256)
    return df.withColumn(REASON, reason).withColumn("quarantine_key", key)


def score_into_table(store, df, bundle_path: str | os.PathLike, table: str = catalog.PREDICTIONS, text_col: str = "text",
                     id_col: str = "review_id", batch_size: int = 256, quarantine: str = catalog.SCORE_QUARANTINE,
                     max_chars: int = MAX_CHARS, run_id: str | None = None, clock: StageClock | None = None,
                     input_stage: str = "read") -> dict:
    """Score ``df`` and MERGE the predictions into Delta table ``table`` keyed by (``id_col``,
    ``model_version``): rows already scored by this model version are left alone, so a re-run adds
    nothing. Rows that cannot be scored (see ``checked_input``) go to ``quarantine`` with their reason,
    whole, keyed by (``quarantine_key``, ``model_version``). Returns the counts — rows_read =
    rows_scored + rows_quarantined — and the table version. ``clock`` times the stages: ``input_stage`` (the input
    read and checked, with what the caller left lazy in ``df``), ``quarantine``, ``model`` and ``merge``."""
    from pyspark.sql import functions as F

    from etl.core.tables import TableError
    from etl.text.validate import REASON

    store.check_names(table, quarantine)  # before anything is written
    version = loaded_bundle(bundle_path).version
    ids = df.filter(F.col(id_col).isNotNull())
    duplicates = ids.groupBy(id_col).count().filter("count > 1").limit(3).collect()
    if duplicates:
        raise TableError(f"{id_col} is not unique in the input (e.g. {[r[id_col] for r in duplicates]}); "
                         "predictions are keyed by it")
    clock = clock or StageClock()
    checked = spill(checked_input(df.select(id_col, text_col), text_col, id_col, max_chars))
    try:
        with clock(input_stage):
            tally = {r[REASON]: r["count"] for r in checked.groupBy(REASON).count().collect()}
        reasons = dict(sorted((k, v) for k, v in tally.items() if k is not None))
        if reasons:
            bad = checked.filter(F.col(REASON).isNotNull()).select(
                "quarantine_key", F.lit(version).alias("model_version"), id_col, text_col, REASON)
            with clock("quarantine"):
                quarantine_rows(store, quarantine, bad, run_id, keys=("quarantine_key", "model_version"))
        good = checked.filter(F.col(REASON).isNull()).select(id_col, text_col)
        scored = score_frame(good, bundle_path, text_col, id_col, batch_size).withColumn("scored_at",
                                                                                          F.current_timestamp())
        scored = spill(scored)
        try:
            with clock("model"):
                rows = scored.count()
            with clock("merge"):
                result = store.merge(table, scored, keys=[id_col, "model_version"], update_matched=False,
                                     commit_info={"lakedl.model_version": version}) if rows else None
        finally:
            scored.unpersist()
    finally:
        checked.unpersist()
    return {"rows_read": sum(tally.values()), "rows_scored": rows, "rows_quarantined": sum(reasons.values()),
            "reasons": reasons, "inserted": result.inserted if result else 0,
            "table_version": result.version if result else None, "model_version": version}


def score_incremental(store, source: str, bundle_path: str | os.PathLike, predictions: str = catalog.PREDICTIONS,
                      runs: str = catalog.SCORE_RUNS, text_col: str = "text", id_col: str = "review_id",
                      batch_size: int = 256, lease_seconds: float = 3600, quarantine: str = catalog.SCORE_QUARANTINE,
                      max_chars: int = MAX_CHARS) -> dict:
    """Score the rows of Delta table ``source`` this bundle's model version has neither scored nor
    quarantined yet, MERGE them into ``predictions`` (unscoreable rows into ``quarantine``) and append a
    row to ``runs``: rows_read = rows_skipped (done before) + rows_scored + rows_failed (quarantined),
    the source version scored up to as the watermark, timings. Holds a lease on ``predictions``
    meanwhile, so a second concurrent run stops at once. A run that crashes commits nothing partial
    (each Delta commit is atomic; the runs row is written last) and the next run picks its rows up; a
    run that fails with an exception records a ``failed`` row with the error before re-raising."""
    from pyspark.sql import functions as F

    from etl.core.lease import Lease

    store.check_names(source, predictions, runs, quarantine)
    version = loaded_bundle(bundle_path).version  # a broken or mismatched bundle is refused before any work
    with Lease(catalog.lease_file(store.root, predictions), lease_seconds), \
            recorded_run(store, runs, source, version) as record:
        record["watermark"] = watermark = store.version(source)
        src = checked_input(store.read(source, version=watermark).select(id_col, text_col), text_col, id_col,
                            max_chars)
        todo = src
        if store.exists(predictions):
            done = store.read(predictions).filter(F.col("model_version") == version).select(id_col)
            todo = todo.join(done, id_col, "left_anti")
        if store.exists(quarantine):
            refused = store.read(quarantine).filter(F.col("model_version") == version).select("quarantine_key")
            todo = todo.join(refused, "quarantine_key", "left_anti")
        clock = StageClock()
        with clock("read"):
            record["rows_read"] = src.count()
        report = score_into_table(store, todo.select(id_col, text_col), bundle_path, predictions, text_col,
                                  id_col, batch_size, quarantine, max_chars, record["run_id"], clock, "anti_join")
        record.update(stage_seconds=clock.seconds, rows_skipped=record["rows_read"] - report["rows_read"], **_run_counts(report))
    return record


def score_files(store, df, bundle_path: str | os.PathLike, source: str, predictions: str = catalog.PREDICTIONS,
                runs: str = catalog.SCORE_RUNS, text_col: str = "text", id_col: str = "review_id", batch_size: int = 256,
                quarantine: str = catalog.SCORE_QUARANTINE, max_chars: int = MAX_CHARS) -> dict:
    """``score_into_table`` of a whole input (``source`` names it in the record), recorded in ``runs`` like
    an incremental run: concurrent runs over the same input insert each prediction once (the MERGE is
    conflict-safe), and each run's record counts what it inserted."""
    store.check_names(predictions, runs, quarantine)
    version = loaded_bundle(bundle_path).version
    with recorded_run(store, runs, source, version) as record:
        clock = StageClock()
        report = score_into_table(store, df, bundle_path, predictions, text_col, id_col, batch_size, quarantine,
                                  max_chars, record["run_id"], clock)
        record.update(rows_read=report["rows_read"], rows_skipped=0, stage_seconds=clock.seconds,
                      **_run_counts(report))
    return {**report, "run_id": record["run_id"]}


def _run_counts(report: dict) -> dict:
    return {"rows_scored": report["rows_scored"], "rows_inserted": report["inserted"],
            "rows_failed": report["rows_quarantined"], "reasons": json.dumps(report["reasons"]),
            "predictions_version": report["table_version"]}


@contextmanager
def recorded_run(store, runs: str, source: str, model_version: str) -> Iterator[dict]:
    """A scoring run's record (etl/core/runs.py), appended to ``runs`` when the block ends: ``succeeded``, or
    ``failed`` with the error in one line (then the exception goes on). Written last, after every commit it
    counts."""
    from etl.core.runs import new_run_id
    from etl.core.runs import recorded_run as record

    with record(store, runs, {"run_id": new_run_id("score"), "source": source, "model_version": model_version},
                RUNS_SCHEMA) as run:
        yield run
