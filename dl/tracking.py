"""Experiment tracking base: MLflow (file store under ``runs/`` unless MLFLOW_TRACKING_URI says
otherwise) and one TensorBoard log directory per run. Nothing is configured at import time."""

from __future__ import annotations

import contextlib
import os
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
              tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
    """An MLflow run for ``cfg`` (a CommonConfig) with its TensorBoard directory
    ``<runs_dir>/tensorboard/<run_id>``; the flattened config is logged as params."""
    import mlflow

    uri = tracking_uri(cfg.paths.runs_dir, cfg.tracking.mlflow_uri)
    if uri.startswith("file:"):
        # MLflow 3.x keeps the file store in maintenance mode behind this switch; it is still the
        # zero-setup default here. Point tracking.mlflow_uri at sqlite:///... or a server to move off it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
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
