"""Experiment tracking base: MLflow (file store under ``runs/`` unless MLFLOW_TRACKING_URI says
otherwise) and one TensorBoard log directory per run. Nothing is configured at import time."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def tracking_uri(runs_dir: str | os.PathLike, configured: str | None = None) -> str:
    """Explicit config wins, then ``$MLFLOW_TRACKING_URI``, then ``file:<runs_dir>/mlflow``."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return Path(runs_dir, "mlflow").absolute().as_uri()


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    experiment_id: str
    tracking_uri: str
    tensorboard_dir: Path | None


@contextlib.contextmanager
def start_run(cfg, run_name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Iterator[RunHandle]:
    """An MLflow run for ``cfg`` (a CommonConfig) with its TensorBoard directory
    ``<runs_dir>/tensorboard/<run_id>``; the flattened config is logged as params. With ``run_id`` the
    existing run is reopened (a resumed training run) and its params are left as they were."""
    import mlflow

    uri = tracking_uri(cfg.paths.runs_dir, cfg.tracking.mlflow_uri)
    if uri.startswith("file:"):
        # MLflow 3.x keeps the file store in maintenance mode behind this switch; it is still the
        # zero-setup default here. Point tracking.mlflow_uri at sqlite:///... or a server to move off it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _run(mlflow, cfg, uri, run_name, params, tags, run_id) as handle:
            yield handle
    finally:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI (for child processes); put it back, or the
        # next job in this process (a notebook, a test session) would log into this job's store
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@contextlib.contextmanager
def _run(mlflow, cfg, uri: str, run_name: str, params, tags, run_id) -> Iterator[RunHandle]:
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(cfg.tracking.experiment)
    nested = mlflow.active_run() is not None  # a search trial inside its study's run (dl/tune/study.py)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags or {}),
                          nested=nested) as run:
        if run_id is None:
            flat = flatten(cfg.model_dump(mode="json"))
            flat.update(params or {})
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        tb_dir = None
        if cfg.tracking.tensorboard:
            tb_dir = Path(cfg.paths.runs_dir, "tensorboard", run.info.run_id).absolute()
            tb_dir.mkdir(parents=True, exist_ok=True)
            mlflow.set_tag("tensorboard_dir", str(tb_dir))
        yield RunHandle(run.info.run_id, experiment.experiment_id, uri, tb_dir)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class MetricsSink:
    """Where rank 0 of a training run sends its scalars while it trains: TensorBoard event files and/or
    an existing MLflow run (by id, so a worker process on any machine that reaches the tracking server
    can log into the run the driver opened). A tracking server that cannot be reached is reported once
    and then skipped: losing live metrics must not kill a training run."""

    def __init__(self, tensorboard_dir: str | None = None, tracking_uri: str | None = None,
                 run_id: str | None = None) -> None:
        self.writer = None
        self.client = None
        self.run_id = run_id
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)
        if tracking_uri and run_id:
            if tracking_uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            self.client, self._metric = MlflowClient(tracking_uri), Metric

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name.replace("_", "/", 1), value, step)
        if self.client is not None:
            now = int(time.time() * 1000)
            try:
                self.client.log_batch(self.run_id, metrics=[self._metric(k, float(v), now, step)
                                                            for k, v in metrics.items()])
            except Exception as exc:  # noqa: BLE001 - report once, keep training
                import logging

                logging.getLogger(__name__).warning("MLflow logging disabled for this run: %s", exc)
                self.client = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
