"""Batch sentiment scoring on Spark: an iterator pandas UDF that loads an inference bundle (dl/bundle.py)
once per Python worker and scores Arrow batches of texts with it.

    from dl.score import score_frame
    scored = score_frame(spark.read.json("reviews/"), "bundles/lstm", text_col="text", id_col="review_id")

Each executor Python worker keeps the loaded bundle for the life of the worker (Spark reuses Python
workers across tasks by default, ``spark.python.worker.reuse``), so a model is loaded once per worker,
not once per batch or task. The batch size of the model is ``batch_size``; the Arrow batch size that
feeds the UDF is ``spark.sql.execution.arrow.maxRecordsPerBatch`` (``spark.arrow_max_records_per_batch``
in the config). A GPU is used when the worker has one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

_LOADED: dict[str, object] = {}  # bundle path + file times -> Bundle, per Python process
RUNS_SCHEMA = ("run_id string, source string, model_version string, status string, rows_read long, rows_scored long, "
               "rows_inserted long, rows_skipped long, rows_failed long, watermark long, predictions_version long, "
               "seconds double, finished_at string")
RUNS_COLUMNS = [c.split()[0] for c in RUNS_SCHEMA.split(", ")]


def loaded_bundle(path: str | os.PathLike):
    """The bundle at ``path``, loaded (and hash-checked) once per process: each executor Python worker,
    and the driver when it validates a bundle before a job. A re-exported bundle (new file times) loads anew."""
    root = Path(path).absolute()
    stamps = tuple((root / f).stat().st_mtime_ns if (root / f).exists() else None
                   for f in ("bundle.json", "weights.safetensors", "tokenizer.json"))
    key = f"{root}|{stamps}"
    if key not in _LOADED:
        from dl.bundle import load_bundle

        _LOADED[key] = load_bundle(root)
    return _LOADED[key]


def output_schema(bundle_path: str | os.PathLike):
    """``label``, ``p_<class>`` per class and ``model_version``, read from bundle.json on the driver."""
    from pyspark.sql import types as T

    from dl.bundle import BundleError

    meta_path = Path(bundle_path) / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"{bundle_path}: not an inference bundle (no bundle.json); write one with "
                          "`lakedl bundle export --run RUN_DIR --out DIR`")
    labels = json.loads(meta_path.read_text())["label_map"].get("sentiment", ["negative", "positive"])
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


def score_frame(df, bundle_path: str | os.PathLike, text_col: str = "text", id_col: str = "review_id",
                batch_size: int = 256):
    """``df`` with ``id_col``, the label, the class probabilities and the model version."""
    from pyspark.sql import functions as F

    udf = score_udf(bundle_path, batch_size)
    return df.select(F.col(id_col), udf(F.col(text_col)).alias("_score")).select(id_col, "_score.*")


def score_into_table(store, df, bundle_path: str | os.PathLike, table: str = "predictions", text_col: str = "text",
                     id_col: str = "review_id", batch_size: int = 256) -> dict:
    """Score ``df`` and MERGE the predictions into Delta table ``table`` keyed by (``id_col``,
    ``model_version``): rows already scored by this model version are left alone, so a re-run adds
    nothing. Returns the counts and the table version."""
    from pyspark.sql import functions as F

    from etl.tables import TableError

    duplicates = df.groupBy(id_col).count().filter("count > 1").limit(3).collect()
    if duplicates:
        raise TableError(f"{id_col} is not unique in the input (e.g. {[r[id_col] for r in duplicates]}); "
                         "predictions are keyed by it")
    scored = score_frame(df, bundle_path, text_col, id_col, batch_size).withColumn("scored_at", F.current_timestamp())
    scored = scored.persist()
    try:
        rows = scored.count()
        version = scored.select("model_version").first()["model_version"] if rows else None
        result = store.merge(table, scored, keys=[id_col, "model_version"], update_matched=False,
                             commit_info={"lakedl.model_version": str(version)}) if rows else None
    finally:
        scored.unpersist()
    return {"rows_scored": rows, "inserted": result.inserted if result else 0,
            "table_version": result.version if result else None, "model_version": version}


def score_incremental(store, source: str, bundle_path: str | os.PathLike, predictions: str = "predictions",
                      runs: str = "score_runs", text_col: str = "text", id_col: str = "review_id",
                      batch_size: int = 256, lease_seconds: float = 3600) -> dict:
    """Score the rows of Delta table ``source`` this bundle's model version has not scored yet, MERGE them
    into ``predictions`` and append a row to ``runs`` (counts, the source version scored up to as the
    watermark, timings). Holds a lease on ``predictions`` meanwhile, so a second concurrent run stops at
    once; a run that crashes commits nothing (Delta commits are atomic and the runs row is written
    last) and the next run picks its rows up."""
    import time
    from datetime import datetime, timezone

    from pyspark.sql import functions as F

    from etl.lease import Lease
    from etl.pipelines import new_run_id

    started = time.perf_counter()
    version = loaded_bundle(bundle_path).version  # a broken or mismatched bundle is refused before any work
    run_id = new_run_id("score")
    with Lease(store.root / "_leases" / f"{predictions}.json", lease_seconds):
        watermark = store.version(source)
        src = store.read(source, version=watermark).select(id_col, text_col)
        todo = src
        if store.exists(predictions):
            done = store.read(predictions).filter(F.col("model_version") == version).select(id_col)
            todo = src.join(done, id_col, "left_anti")
        rows_read = src.count()
        report = score_into_table(store, todo, bundle_path, predictions, text_col, id_col, batch_size)
        record = {"run_id": run_id, "source": source, "model_version": version, "status": "succeeded",
                  "rows_read": rows_read, "rows_scored": report["rows_scored"], "rows_inserted": report["inserted"],
                  "rows_skipped": rows_read - report["rows_scored"], "rows_failed": 0, "watermark": watermark,
                  "predictions_version": report["table_version"], "seconds": round(time.perf_counter() - started, 3),
                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        store.write(runs, store._spark().createDataFrame([tuple(record[k] for k in RUNS_COLUMNS)], RUNS_SCHEMA),
                    "append")
    return record
