"""The ``train`` job body: config → worker settings → launcher, inside an MLflow run, then the run's
reports (history, training curves PNG, config, checkpoint) next to the checkpoint and in MLflow.

A run lives in ``<runs_dir>/train/<name>/``: ``last.pt`` (rank 0 writes it after every epoch and every
``train.checkpoint_every`` steps), ``run.json`` (the MLflow run id, so ``--resume`` logs into the same
run), ``config.yml``, ``history.json``, ``curves.png`` and ``result.json``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dl.engine.callbacks import EarlyStopping, StopAtTarget
from dl.engine.checkpoint import run_weights
from dl.engine.settings import RunContext, WorkerSettings
from dl.models import IMAGE_MODELS
from dl.train.config import TrainConfig
from dl.train.rundir import run_dir
from etl.core.errors import LakedlError
from etl.core.logs import get_logger

log = get_logger(__name__)


class TrainError(LakedlError, RuntimeError):
    """The run cannot start or did not finish; the message says why and what to do."""


def worker_settings(cfg: TrainConfig, directory: Path, tracking_uri: str | None = None, run_id: str | None = None,
                    tensorboard_dir: str | None = None, callbacks: Sequence = ()) -> WorkerSettings:
    """The config's sections as every rank receives them (file paths absolute), this run's context, and the
    epoch-end callbacks: early stopping (train.patience), a target (train.stop_at), then ``callbacks``."""
    stopping = [EarlyStopping(cfg.train.patience)] if cfg.train.patience is not None else []
    stopping += [StopAtTarget(cfg.train.stop_at)] if cfg.train.stop_at is not None else []
    return WorkerSettings(
        data=cfg.data.model_copy(update={"shards": str(Path(cfg.data.shards).absolute()),
                                         "judge": str(Path(cfg.data.judge).absolute()) if cfg.data.judge else None}),
        model=cfg.model.resolved(cfg.paths.raw_dir), train=cfg.train, optim=cfg.optim, schedule=cfg.schedule,
        sync=cfg.sync, run=RunContext(checkpoint_dir=str(directory.absolute()), resume=cfg.run.resume,
                                      restartable=True, tracking_uri=tracking_uri, run_id=run_id,
                                      tensorboard_dir=tensorboard_dir),
        callbacks=[*stopping, *callbacks])


def _check_inputs(cfg: TrainConfig, directory: Path) -> None:
    shards = Path(cfg.data.shards)
    etl = "images" if cfg.model.name in IMAGE_MODELS else "text"
    if not (shards / "manifest.json").is_file():
        raise TrainError(f"data.shards={shards}: no manifest.json there; run `lakedl etl {etl}` first or point "
                         "data.shards at its output (<output.shards_dir>/<output.name>)")
    for split in ("train", "dev"):
        if not any((shards / split).glob("*.parquet")):
            raise TrainError(f"{shards / split}: no Parquet shards; the {split} split is empty")
    is_images = "classes" in json.loads((shards / "manifest.json").read_text())
    if is_images != (etl == "images"):
        raise TrainError(f"model.name={cfg.model.name} trains on `lakedl etl {etl}` output, but data.shards={shards} "
                         f"is a{'n image' if is_images else ' text'} dataset: point data.shards at the other ETL's output")
    if cfg.model.embeddings and not Path(cfg.model.embeddings).is_file():
        raise TrainError(f"model.embeddings={cfg.model.embeddings}: no such file; `lakedl data fetch --source "
                         "glove100` writes data/raw/glove100/vectors.bin")
    tokenizer = json.loads((shards / "manifest.json").read_text()).get("tokenizer")
    if cfg.model.name == "gpt" and tokenizer not in ("word", None):
        raise TrainError(f"model.name=gpt reads the word tokenizer's <bos>/<eos> ids, but {shards} used "
                         f"tokenize.kind={tokenizer}: rerun `lakedl etl text --set tokenize.kind=word`")
    if cfg.model.name == "bert":
        pretrained = Path(cfg.model.resolved(cfg.paths.raw_dir).bert.pretrained)
        if not (pretrained / "config.json").is_file():
            raise TrainError(f"model.bert.pretrained={pretrained}: no config.json there; `lakedl data fetch --source "
                             "minilm` writes data/raw/minilm/model")
        if tokenizer != "minilm":
            raise TrainError(f"model.name=bert needs shards tokenized with the model's own WordPiece vocabulary, but "
                             f"{shards} used tokenize.kind={tokenizer}: rerun `lakedl etl text --set tokenize.kind=minilm`")
    if cfg.data.judge and run_weights(cfg.data.judge) is None:
        raise TrainError(f"data.judge={cfg.data.judge}: no best.pt or last.pt there; train an image classifier on "
                         "the same dataset first (e.g. `lakedl train --conf conf/recipes/resnet_small.yml`)")
    if cfg.run.resume and not (directory / "last.pt").is_file():
        raise TrainError(f"run.resume=true but {directory / 'last.pt'} does not exist: nothing to resume "
                         "(check run.name / run.dir)")
    if not cfg.run.resume and (directory / "last.pt").is_file():
        raise TrainError(f"{directory} already holds a run: pass --resume to continue it or pick another run.name")


def launch_with_restarts(start, directory: Path, max_restarts: int, launch_id: str) -> tuple[dict, list[dict]]:
    """``start(attempt)`` (a launch of every rank); when it fails, start it again — the workers resume from
    ``last.pt`` — up to ``max_restarts`` times. Only a worker that failed after the start is retried; a refused
    launch (a misconfiguration) is raised as is. Returns the result and one record per restart: who restarted
    (``launcher``, or ``spark`` retrying a failed barrier stage inside one attempt, seen in the ranks' start
    records), the error, the step the failed start had reached (its ranks' heartbeats), the checkpoint's step it
    resumed from, and the steps lost between them. When every attempt failed, raises the first error."""
    import mlflow

    from dl.engine.checkpoint import read_checkpoint
    from dl.engine.launch import WorkerFailed
    from dl.engine.loop import last_heartbeat

    ours: list[dict] = []
    first: WorkerFailed | None = None
    while True:
        try:
            result = start(len(ours))
            break
        except WorkerFailed as exc:
            first = first or exc
            if len(ours) >= max_restarts:
                if ours:
                    raise WorkerFailed(f"training failed {len(ours) + 1} times (launcher.max_restarts="
                                       f"{max_restarts}); the first failure: {first}") from first
                raise
            last = last_heartbeat(directory)
            ckpt = directory / "last.pt"
            resumed = read_checkpoint(ckpt)["step"] if ckpt.is_file() else 0
            said = [line.strip() for line in str(exc).splitlines() if line.strip()]  # heading + the cause's line
            ours.append({"attempt": len(ours) + 1, "by": "launcher", "error": " ".join(said[:2])[:300],
                         "epoch": last["epoch"], "reached_step": last["step"], "resumed_from_step": resumed,
                         "steps_lost": max(0, last["step"] - resumed)})
            log.warning("training failed at step %d (%s); restart %d of %d from the checkpoint at step %d",
                        last["step"], ours[-1]["error"], len(ours), max_restarts, resumed)
            if mlflow.active_run() is not None:
                mlflow.set_tag("restarts", str(len(ours)))
    restarts = _with_spark_restarts(ours, directory / "ranks" / "starts.jsonl", launch_id)
    if restarts and mlflow.active_run() is not None:
        mlflow.log_metrics({"restarts": len(restarts), "steps_lost": sum(r["steps_lost"] for r in restarts)})
        mlflow.set_tag("restarts", str(len(restarts)))
    return result, restarts


def _with_spark_restarts(ours: list[dict], starts_file: Path, launch_id: str) -> list[dict]:
    """The launcher's restarts, and in their order the starts Spark made by itself: a second start of the ranks
    within one attempt (a barrier stage retried after a task failed, e.g. a killed rank on a standalone cluster,
    where spark.stage.maxConsecutiveAttempts allows it)."""
    lines = starts_file.read_text().splitlines() if starts_file.is_file() else []
    starts = [s for s in map(json.loads, lines) if s.get("launch") == launch_id]
    restarts, by_attempt = [], {r["attempt"]: r for r in ours}
    for before, now in zip(starts, starts[1:]):
        if now["attempt"] != before["attempt"]:
            restarts.append(by_attempt.pop(now["attempt"], None))
            continue
        restarts.append({"attempt": now["attempt"], "by": "spark",
                         "error": "Spark started every rank again (a task of the barrier stage failed; see the "
                                  "executor logs)", "epoch": now["epoch"], "reached_step": now["reached_step"],
                         "resumed_from_step": now["resumed_from_step"],
                         "steps_lost": max(0, now["reached_step"] - now["resumed_from_step"])})
    return [r for r in restarts if r is not None] + list(by_attempt.values())  # (a start that never began)


def run_train(cfg: TrainConfig, spark=None, callbacks: Sequence = (), tags: dict[str, str] | None = None) -> dict:
    """Train as configured; returns the summary also written to ``result.json``. ``callbacks`` and ``tags``:
    e.g. a `lakedl tune` trial's pruning (dl/engine/callbacks.py) and MLflow tags (its parent run)."""
    import mlflow

    from dl.engine.launch import launch
    from dl.engine.tracking import start_run
    from dl.train.plots import training_curves
    from dl.train.report import write_report
    from dl.train.worker import train_worker
    from etl.core.config import dump_config
    from etl.core.runs import new_run_id

    name = cfg.run.name or new_run_id("train")
    directory = run_dir(cfg, name)
    _check_inputs(cfg, directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "run.json"
    previous = json.loads(meta_path.read_text())["mlflow_run_id"] if cfg.run.resume and meta_path.is_file() else None
    if cfg.launcher.kind != "local" and spark is None:
        from etl.core.spark import get_spark

        spark = get_spark(cfg.spark)
    with start_run(cfg, name, tags={"job": "train", "launcher": cfg.launcher.kind, **(tags or {})},
                   run_id=previous) as handle:
        meta_path.write_text(json.dumps({"name": name, "mlflow_run_id": handle.run_id}))
        (directory / "config.yml").write_text(dump_config(cfg))
        settings = worker_settings(cfg, directory, handle.tracking_uri, handle.run_id,
                                   str(handle.tensorboard_dir) if handle.tensorboard_dir else None, callbacks)
        log.info("training %s: %s launcher, %d process(es), run dir %s", name, cfg.launcher.kind,
                 cfg.launcher.num_processes, directory)
        started = time.perf_counter()
        launch_id = uuid.uuid4().hex
        result, restarts = launch_with_restarts(
            lambda attempt: launch(train_worker,
                                   replace(settings, run=replace(settings.run, launch_id=launch_id, attempt=attempt)),
                                   cfg.launcher.kind, cfg.launcher.num_processes, cfg.launcher.use_gpu, spark),
            directory, cfg.launcher.max_restarts, launch_id)
        seconds = time.perf_counter() - started
        history = result["history"]
        for restart in restarts:  # in the history of the epoch each one happened in
            at = next((h for h in history if h["epoch"] == restart["epoch"]), None)
            if at is not None:
                at.setdefault("restarts", []).append(restart)
        summary = {"run": name, "run_dir": str(directory), "mlflow_run_id": handle.run_id,
                   "launcher": cfg.launcher.kind, "processes": result["world_size"],
                   "epochs_run": result["epochs_run"], "steps": result["steps"], "seconds": round(seconds, 2),
                   "final": history[-1] if history else {}, "best_epoch": result.get("best_epoch"),
                   "test": result.get("test"), "diagnosis": result.get("diagnosis"),
                   "weights_identical_across_ranks": len(set(result["weights_sha256_by_rank"])) == 1,
                   "address_by_rank": result.get("address_by_rank"), "restarts": restarts,
                   "stopped_by": result.get("stopped_by"), "pruned": result.get("pruned", False), "best_score": result.get("best_score")}
        (directory / "history.json").write_text(json.dumps(history, indent=1))
        (directory / "result.json").write_text(json.dumps(summary, indent=1, default=str))
        artifacts = ["config.yml", "history.json", "result.json", "last.pt"]
        if history:
            training_curves(history, directory / "curves.png", title=name)
            artifacts.append("curves.png")
            try:  # the run itself succeeded: a report that cannot be drawn must not fail it
                summary["report"] = str(write_report(directory))
                artifacts.append("report.html")
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("report.html not written (%s); `lakedl report --run %s` retries", exc, directory)
        for artifact in artifacts:
            if (directory / artifact).is_file():
                mlflow.log_artifact(str(directory / artifact))
        if result.get("diagnosis"):
            mlflow.set_tags({"diagnosis": result["diagnosis"]["verdict"]})
            mlflow.log_dict(result["diagnosis"], "diagnosis.json")
        mlflow.log_metric("train_seconds", seconds)
        for key, value in (result.get("test") or {}).items():
            if isinstance(value, (int, float)):
                mlflow.log_metric(f"test_{key}", value)
    return summary
