"""MLflow file store under runs/ and a TensorBoard directory per run, read back for real."""

from __future__ import annotations

import os

from dl.engine.tracking import flatten, start_run, tracking_uri
from jobs.configs import load_config


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == (tmp_path / "mlflow").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking_uri(tmp_path) == "sqlite:///x.db"
    assert tracking_uri(tmp_path, "http://mlflow:5000") == "http://mlflow:5000"


def test_run_logs_params_metrics_and_tensorboard(conf_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("common", conf_dir, overrides=[f"paths.runs_dir={tmp_path / 'runs'}",
                                                     "tracking.experiment=t-exp"])
    with start_run(cfg, "unit", params={"lr": 0.1}) as run:
        mlflow.log_metric("loss", 0.5, step=1)
        with SummaryWriter(run.tensorboard_dir) as tb:
            tb.add_scalar("loss", 0.5, 1)
    client = MlflowClient(tracking_uri=run.tracking_uri)
    got = client.get_run(run.run_id)
    assert got.data.params["lr"] == "0.1"
    assert got.data.params["spark.shuffle_partitions"] == "8"
    assert got.data.metrics["loss"] == 0.5
    assert client.get_experiment(run.experiment_id).name == "t-exp"
    assert run.tracking_uri.startswith("file:") and (tmp_path / "runs" / "mlflow").is_dir()
    assert list(run.tensorboard_dir.glob("events.out.tfevents.*"))


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}


def test_consecutive_runs_in_one_process_keep_their_own_stores(conf_dir, tmp_path, monkeypatch):
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a second job in the same process (a notebook,
    # this test session) must still log under its own runs_dir
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    handles = []
    for name in ("a", "b"):
        cfg = load_config("common", conf_dir, overrides=[f"paths.runs_dir={tmp_path / name}"])
        with start_run(cfg, name) as run:
            handles.append(run)
        assert "MLFLOW_TRACKING_URI" not in os.environ
    assert [h.tracking_uri for h in handles] == [(tmp_path / n / "mlflow").as_uri() for n in ("a", "b")]
