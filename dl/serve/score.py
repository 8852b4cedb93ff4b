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
               "peak_rss_mb string, path string, rows_updated long, rows_deleted long, consumed_from long")
# a change-feed row's place in its key's history: a commit's deletes and pre-images before its inserts and post-images
_AFTER = ("insert", "update_postimage")


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


def output_schema(bundle_path: str | os.PathLike, explain: int = 0):
    """``label``, ``p_<class>`` per class and ``model_version``, read from bundle.json on the driver; with
    ``explain`` also ``top_tokens`` (dl/serve/explain.py ``top_tokens``)."""
    from pyspark.sql import types as T

    from dl.serve.bundle import BundleError, read_meta

    if not (Path(bundle_path) / "bundle.json").is_file():
        raise BundleError(f"{bundle_path}: not an inference bundle (no bundle.json); write one with "
                          "`lakedl bundle export --run RUN_DIR --out DIR`")
    meta = read_meta(bundle_path)
    labels = meta["label_map"].get("sentiment", ["negative", "positive"])
    if explain:
        from dl.serve.explain import refuse_quantized

        refuse_quantized(meta, bundle_path)
    return T.StructType([T.StructField("label", T.StringType()),
                         *[T.StructField(f"p_{name}", T.DoubleType()) for name in labels],
                         T.StructField("model_version", T.StringType()),
                         *([T.StructField("top_tokens", T.StringType())] if explain else [])])


def score_udf(bundle_path: str | os.PathLike, batch_size: int = 256, explain: int = 0):
    """The scoring UDF of one bundle: ``Iterator[pd.Series] -> Iterator[pd.DataFrame]``; ``explain`` > 0 adds
    each row's top tokens (integrated gradients: tens of forward/backward passes a row, so opt in)."""
    from pyspark.sql import functions as F

    path = str(Path(bundle_path).absolute())
    schema = output_schema(path, explain)

    @F.pandas_udf(schema)
    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        import torch

        if explain:
            from dl.serve.explain import top_tokens

        bundle = loaded_bundle(path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for texts in batches:
            texts = texts.fillna("").astype(str).tolist()
            out = bundle.predict(texts, batch_size, device)
            if explain:
                out["top_tokens"] = top_tokens(bundle, texts, explain)
            yield out

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
                batch_size: int = 256, explain: int = 0):
    """``df`` with ``id_col``, the label, the class probabilities and the model version (and ``top_tokens``)."""
    from pyspark.sql import functions as F

    udf = score_udf(bundle_path, batch_size, explain)
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
                     input_stage: str = "read", replace: bool = False, delete=None,
                     txn: tuple[str, int] | None = None, explain: int = 0) -> dict:
    """Score ``df`` and MERGE the predictions into Delta table ``table`` keyed by (``id_col``,
    ``model_version``): rows already scored by this model version are left alone, so a re-run adds
    nothing. Rows that cannot be scored (see ``checked_input``) go to ``quarantine`` with their reason,
    whole, keyed by (``quarantine_key``, ``model_version``). Returns the counts — rows_read =
    rows_scored + rows_quarantined — and the table version. ``clock`` times the stages: ``input_stage`` (the input
    read and checked, with what the caller left lazy in ``df``), ``quarantine``, ``model`` and ``merge``.

    For the change feed: ``replace`` makes a new prediction replace this model version's old one for the
    id (the text changed) and removes the old one of an id whose new text is quarantined; ``delete`` (ids)
    removes predictions; ``txn`` (app id, source version) goes into the one commit (``TableStore.merge``).
    ``explain`` K > 0: each prediction's K top tokens in column ``top_tokens`` (added to the table when it lacks
    it; rows scored without it hold null there)."""
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
        if replace and reasons:
            stale = checked.filter(F.col(REASON).isNotNull() & F.col(id_col).isNotNull()).select(id_col)
            delete = stale if delete is None else delete.unionByName(stale)
        good = checked.filter(F.col(REASON).isNull()).select(id_col, text_col)
        scored = score_frame(good, bundle_path, text_col, id_col, batch_size, explain).withColumn(
            "scored_at", F.current_timestamp())
        if not explain and store.exists(table) and "top_tokens" in store.schema(table).names:
            scored = scored.withColumn("top_tokens", F.lit(None).cast("string"))
        scored = spill(scored)
        try:
            with clock("model"):
                rows = scored.count()
            with clock("merge"):
                result = None
                if rows or delete is not None or txn is not None:
                    gone = None if delete is None else delete.select(id_col).withColumn("model_version",
                                                                                        F.lit(version))
                    result = store.merge(table, scored, keys=[id_col, "model_version"], update_matched=replace,
                                         commit_info={"lakedl.model_version": version}, delete=gone, txn=txn,
                                         add_columns=bool(explain))
        finally:
            scored.unpersist()
    finally:
        checked.unpersist()
    return {"rows_read": sum(tally.values()), "rows_scored": rows, "rows_quarantined": sum(reasons.values()),
            "reasons": reasons, "inserted": result.inserted if result else 0,
            "updated": result.updated if result else 0, "deleted": result.deleted if result else 0,
            "table_version": result.version if result and result.committed else None, "model_version": version}


def score_incremental(store, source: str, bundle_path: str | os.PathLike, predictions: str = catalog.PREDICTIONS,
                      runs: str = catalog.SCORE_RUNS, text_col: str = "text", id_col: str = "review_id",
                      batch_size: int = 256, lease_seconds: float = 3600, quarantine: str = catalog.SCORE_QUARANTINE,
                      max_chars: int = MAX_CHARS, change_feed: bool = True, explain: int = 0) -> dict:
    """Bring this bundle's model version's predictions in ``predictions`` up to the current version of Delta
    table ``source`` (unscoreable rows into ``quarantine``) and append a row to ``runs``. Holds a lease on
    ``predictions`` meanwhile, so a second concurrent run stops at once. A run that crashes commits nothing
    partial (each Delta commit is atomic; the runs row is written last) and the next run picks its rows up; a
    run that fails with an exception records a ``failed`` row with the error before re-raising.

    Each run commits its predictions with a Delta application transaction on ``predictions`` (app id
    ``score_app_id``: source table id and model version; txn version = the source version scored up to, the
    record's ``watermark``), and the record's ``path`` says how it found its rows:

    * ``cdf`` (``change_feed``, the delta-rs backend and a run before it): the source's change data feed since
      the version the last run consumed (``consumed_from``). Per id, the feed's first and last change give the
      row before and after: a new row is scored, a row whose text changed is scored again (its prediction
      replaced), a deleted row's prediction removed, a row rewritten unchanged skipped — all in one commit with
      the transaction, so a run retried after a crash writes nothing twice. rows_read (ids in the feed) =
      rows_skipped + rows_scored + rows_failed (quarantined) + rows_deleted.
    * ``anti_join`` (the first run for this source and model version, or a feed that cannot be read): every row
      of the source neither scored nor quarantined by this model version yet; rows_read (the source) =
      rows_skipped (done before) + rows_scored + rows_failed. Updates and deletes are not seen this way; when
      forced (``change_feed=False``) after a feed run it commits without the transaction, so the next feed run
      still reads the edits and deletes since the last one."""
    from etl.core.lease import Lease
    from etl.core.tables import ChangeFeedUnavailable

    store.check_names(source, predictions, runs, quarantine)
    version = loaded_bundle(bundle_path).version  # a broken or mismatched bundle is refused before any work
    with Lease(catalog.lease_file(store.root, predictions), lease_seconds), \
            recorded_run(store, runs, source, version) as record:
        record["watermark"] = watermark = store.version(source)
        app_id = score_app_id(store, source, version)
        consumed = store.transaction_version(predictions, app_id) if store.backend == "delta-rs" else None
        clock = StageClock()
        changes = None
        if change_feed and consumed is not None:
            if consumed >= watermark:  # nothing new, or a retry of a run that committed and died before its record
                record.update(path="cdf", consumed_from=consumed, rows_read=0, rows_skipped=0, rows_scored=0,
                              rows_inserted=0, rows_updated=0, rows_failed=0, rows_deleted=0, reasons="{}",
                              predictions_version=None)
                return record
            try:
                changes, _ = store.read_changes(source, consumed, watermark)
            except ChangeFeedUnavailable as exc:
                log.warning("reading the whole source: %s", exc)
        # a forced anti-join (change_feed=False) after a feed run leaves the feed's position where it was: it sees
        # no edit or delete, so the next feed run must still read them (and re-scores, idempotently, what this
        # run added); a first run, or one whose feed was unreadable, moves the position to what it scored
        forced = not change_feed and consumed is not None
        txn = (app_id, watermark) if store.backend == "delta-rs" and not forced else None
        if changes is not None:
            record.update(path="cdf", consumed_from=consumed)
            _score_changes(store, changes, bundle_path, predictions, quarantine, text_col, id_col, batch_size,
                           max_chars, record, clock, txn, explain)
        else:
            record["path"] = "anti_join"
            _score_anti_join(store, source, watermark, bundle_path, predictions, quarantine, text_col, id_col,
                             batch_size, max_chars, record, clock, txn, explain)
        record["stage_seconds"] = clock.seconds
    return record


def score_app_id(store, source: str, model_version: str) -> str:
    """The Delta application id of scoring ``source`` with ``model_version``: the source's table id is part of it,
    so a source dropped and created again starts afresh."""
    return f"lakedl.score:{source}:{store._table(source).metadata().id}:{model_version}"


def _score_anti_join(store, source, watermark, bundle_path, predictions, quarantine, text_col, id_col, batch_size,
                     max_chars, record, clock, txn, explain) -> None:
    from pyspark.sql import functions as F

    version = record["model_version"]
    src = checked_input(store.read(source, version=watermark).select(id_col, text_col), text_col, id_col, max_chars)
    todo = src
    if store.exists(predictions):
        done = store.read(predictions).filter(F.col("model_version") == version).select(id_col)
        todo = todo.join(done, id_col, "left_anti")
    if store.exists(quarantine):
        refused = store.read(quarantine).filter(F.col("model_version") == version).select("quarantine_key")
        todo = todo.join(refused, "quarantine_key", "left_anti")
    with clock("read"):
        record["rows_read"] = src.count()
    report = score_into_table(store, todo.select(id_col, text_col), bundle_path, predictions, text_col, id_col,
                              batch_size, quarantine, max_chars, record["run_id"], clock, "anti_join", txn=txn,
                              explain=explain)
    record.update(rows_skipped=record["rows_read"] - report["rows_read"], rows_deleted=0, **_run_counts(report))


def _score_changes(store, changes, bundle_path, predictions, quarantine, text_col, id_col, batch_size, max_chars,
                   record, clock, txn, explain) -> None:
    """The change feed ``changes`` reduced to one action per id (see ``score_incremental``), then scored."""
    from pyspark.sql import functions as F

    after = F.col("_change_type").isin(*_AFTER)
    rank = F.col("_commit_version") * 2 + after.cast("long")
    image = F.struct(after.alias("present"), F.col(text_col).alias("text"))
    net = (changes.filter(F.col(id_col).isNotNull())
           .groupBy(id_col).agg(F.min_by(image, rank).alias("first"), F.max_by(image, rank).alias("last")))
    existed, exists = ~F.col("first.present"), F.col("last.present")  # the first change undoes the row before
    action = (F.when(exists & (~existed | ~F.col("first.text").eqNullSafe(F.col("last.text"))), F.lit("score"))
              .when(~exists & existed, F.lit("delete")).otherwise(F.lit("skip")))
    net = net.select(id_col, F.col("last.text").alias(text_col), action.alias("_action"))
    # a row without an id has no history to reduce: each one added goes to scoring, which quarantines it
    # (missing_review_id), as the anti-join path does; one removed had no prediction to remove
    idless = changes.filter(F.col(id_col).isNull() & after).select(id_col, text_col, F.lit("score").alias("_action"))
    net = spill(net.unionByName(idless))
    try:
        with clock("feed"):
            counts = {r["_action"]: r["count"] for r in net.groupBy("_action").count().collect()}
        deleted = net.filter(F.col("_action") == "delete").select(id_col)
        report = score_into_table(store, net.filter(F.col("_action") == "score").select(id_col, text_col),
                                  bundle_path, predictions, text_col, id_col, batch_size, quarantine, max_chars,
                                  record["run_id"], clock, "changes", replace=True,
                                  delete=deleted if counts.get("delete") else None, txn=txn, explain=explain)
    finally:
        net.unpersist()
    record.update(rows_read=sum(counts.values()), rows_skipped=counts.get("skip", 0),
                  rows_deleted=counts.get("delete", 0), **_run_counts(report))


def score_files(store, df, bundle_path: str | os.PathLike, source: str, predictions: str = catalog.PREDICTIONS,
                runs: str = catalog.SCORE_RUNS, text_col: str = "text", id_col: str = "review_id", batch_size: int = 256,
                quarantine: str = catalog.SCORE_QUARANTINE, max_chars: int = MAX_CHARS, explain: int = 0) -> dict:
    """``score_into_table`` of a whole input (``source`` names it in the record), recorded in ``runs`` like
    an incremental run: concurrent runs over the same input insert each prediction once (the MERGE is
    conflict-safe), and each run's record counts what it inserted."""
    store.check_names(predictions, runs, quarantine)
    version = loaded_bundle(bundle_path).version
    with recorded_run(store, runs, source, version) as record:
        clock = StageClock()
        report = score_into_table(store, df, bundle_path, predictions, text_col, id_col, batch_size, quarantine,
                                  max_chars, record["run_id"], clock, explain=explain)
        record.update(rows_read=report["rows_read"], rows_skipped=0, stage_seconds=clock.seconds,
                      **_run_counts(report))
    return {**report, "run_id": record["run_id"]}


def _run_counts(report: dict) -> dict:
    return {"rows_scored": report["rows_scored"], "rows_inserted": report["inserted"],
            "rows_updated": report["updated"],
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
