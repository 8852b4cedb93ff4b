"""The `train` job end to end: config → launcher → MLflow run, TensorBoard scalars, checkpoint and
curves PNG; a killed worker is reported and the run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from dl.train.job import TrainError, run_train
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]
LAKEDL = str(Path(sys.executable).parent / "lakedl")


def train_cfg(shards, runs, *sets):
    return load_config("train", REPO / "conf", overrides=[f"data.shards={shards}", f"paths.runs_dir={runs}",
                                                          "train.progress=false", *sets])


def test_train_job_tracks_the_run(shards, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = train_cfg(shards, tmp_path, "launcher.num_processes=1", "train.epochs=3", "optim.lr=0.02",
                    "train.log_every=5", "train.batch_size=32", "run.name=r1")
    summary = run_train(cfg)
    run = tmp_path / "train" / "r1"
    assert summary["epochs_run"] == 3 and summary["final"]["dev_sentiment_accuracy"] >= 0.9
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((run / "history.json").read_text())) == 3
    client = MlflowClient((tmp_path / "mlflow").absolute().as_uri())
    dev = client.get_metric_history(summary["mlflow_run_id"], "dev_sentiment_accuracy")
    # 720 of the 800 rows carry a sentiment label: 23 steps of 32 per epoch; one point per epoch
    assert [m.step for m in dev] == [23, 46, 69]
    assert len(client.get_metric_history(summary["mlflow_run_id"], "train_step_loss")) == 69 // 5
    artifacts = {a.path for a in client.list_artifacts(summary["mlflow_run_id"])}
    assert {"last.pt", "curves.png", "config.yml", "history.json", "diagnosis.json", "report.html"} <= artifacts
    report = (run / "report.html").read_text()
    assert summary["report"] == str(run / "report.html") and report.count("data:image/png;base64,") == 1  # curves
    assert "Worst-scored test examples" not in report and "Confusion" not in report  # the toy shards have no test split
    assert "Bias / variance" in report and "dev error" in report
    tb = EventAccumulator(str(tmp_path / "tensorboard" / summary["mlflow_run_id"]))
    tb.Reload()
    assert len(tb.Scalars("dev/sentiment_accuracy")) == 3
    with pytest.raises(TrainError, match="already holds a run: pass --resume"):
        run_train(cfg)
    with pytest.raises(TrainError, match="nothing to resume"):
        run_train(train_cfg(shards, tmp_path, "run.name=r2", "run.resume=true"))
    with pytest.raises(TrainError, match="run `lakedl etl text` first"):
        run_train(train_cfg(tmp_path / "nowhere", tmp_path))


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    return [p for p in parent.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def _heartbeat(run: Path, rank: int) -> dict | None:
    try:
        return json.loads((run / "ranks" / f"rank{rank}.json").read_text())
    except (OSError, ValueError):  # not written yet
        return None


def _kill_rank_at(proc: subprocess.Popen, run: Path, rank: int, step: int, not_pid: int | None = None) -> int:
    """SIGKILL ``rank``'s process (its pid from its heartbeat) once it has reached ``step``; returns the pid."""
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        beat = _heartbeat(run, rank)
        if beat and beat["step"] >= step and beat["pid"] != not_pid:
            os.kill(beat["pid"], signal.SIGKILL)
            return beat["pid"]
        time.sleep(0.01)
    raise AssertionError(f"rank {rank} never reached step {step} (exit {proc.poll()})")


TRAIN_ARGS = ["--set", "train.epochs=4", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=10",
              "--set", "optim.lr=0.01", "--set", "train.progress=false"]


def _train_cli(shards, tmp_path, name, *more):
    return ["train", "--conf-dir", str(REPO / "conf"), "--shards", str(shards), "--processes", "2",
            "--run-name", name, "--set", f"paths.runs_dir={tmp_path}", *TRAIN_ARGS, *more]


@pytest.mark.distributed
def test_killed_worker_without_restarts_is_reported_and_the_run_resumes_by_hand(shards, tmp_path):
    args = _train_cli(shards, tmp_path, "k", "--set", "launcher.max_restarts=0")
    run = tmp_path / "train" / "k"
    proc = subprocess.Popen([LAKEDL, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_rank_at(proc, run, 1, 25)  # mid-epoch: 45 steps per epoch, checkpoints every 10
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "error: local launch with 2 processes failed" in err and "SIGKILL" in err
    assert not (run / "result.json").exists()

    resumed = subprocess.run([LAKEDL, *args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((run / "result.json").read_text())
    assert result["epochs_run"] == 4 and result["weights_identical_across_ranks"] and result["restarts"] == []


@pytest.mark.distributed
def test_a_killed_worker_restarts_from_the_checkpoint_by_itself(shards, tmp_path):
    """launcher.max_restarts (default 2): rank 1 SIGKILLed mid-epoch → the launcher restarts every rank from
    last.pt without a person; the run ends with the optimizer steps and dev accuracy of an uninterrupted one."""
    from mlflow.tracking import MlflowClient

    run = tmp_path / "train" / "auto"
    proc = subprocess.Popen([LAKEDL, *_train_cli(shards, tmp_path, "auto")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_rank_at(proc, run, 1, 25)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "restart 1 of 2 from the checkpoint at step 20" in err
    result = json.loads((run / "result.json").read_text())
    [restart] = result["restarts"]
    assert restart["resumed_from_step"] == 20 and restart["reached_step"] >= 25
    assert restart["steps_lost"] == restart["reached_step"] - 20 and "SIGKILL" in restart["error"]
    assert restart["by"] == "launcher" and restart["attempt"] == 1
    starts = [json.loads(x) for x in (run / "ranks" / "starts.jsonl").read_text().splitlines()]
    assert [s["attempt"] for s in starts] == [0, 1] and starts[1]["resumed_from_step"] == 20
    assert result["epochs_run"] == 4 and result["weights_identical_across_ranks"]
    assert _heartbeat(run, 1)["pid"] != killed  # the rank that finished is a new process
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history if "restarts" in h] == [restart["epoch"]] == [0]

    clean = run_train(train_cfg(shards, tmp_path, "run.name=clean", "train.epochs=4", "train.batch_size=8",
                                "train.checkpoint_every=10", "optim.lr=0.01"))
    client = MlflowClient((tmp_path / "mlflow").absolute().as_uri())  # (after a run here: the file store's switch)
    # one restart recorded (MLflow 3 files the run's metrics a second time when the train command logs its model)
    assert {m.value for m in client.get_metric_history(result["mlflow_run_id"], "restarts")} == {1}
    assert result["steps"] == clean["steps"] and clean["restarts"] == []
    assert abs(result["final"]["dev_sentiment_accuracy"] - clean["final"]["dev_sentiment_accuracy"]) <= 0.01


def test_a_refused_launch_is_not_restarted(shards, tmp_path):
    from dl.engine.launch import LaunchError, WorkerFailed

    with pytest.raises(LaunchError, match="^use_gpu=true but this machine has no CUDA device") as refused:
        run_train(train_cfg(shards, tmp_path, "launcher.use_gpu=true", "run.name=gpu"))
    assert not isinstance(refused.value, WorkerFailed)  # a misconfiguration fails once, with its own message
    assert not (tmp_path / "train" / "gpu" / "ranks").exists()  # no worker started


@pytest.mark.distributed
def test_a_run_that_keeps_failing_stops_after_max_restarts_with_the_first_error(shards, tmp_path):
    run = tmp_path / "train" / "twice"
    proc = subprocess.Popen([LAKEDL, *_train_cli(shards, tmp_path, "twice", "--set", "launcher.max_restarts=1")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = _kill_rank_at(proc, run, 1, 25)
    _kill_rank_at(proc, run, 0, 35, not_pid=None if _heartbeat(run, 0) is None else _heartbeat(run, 0)["pid"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "training failed 2 times (launcher.max_restarts=1); the first failure: local launch" in line
    assert "process 1 killed by SIGKILL" in line and first


@pytest.mark.distributed
def test_workers_do_not_outlive_a_killed_launcher(shards, tmp_path):
    args = ["train", "--conf-dir", str(REPO / "conf"), "--shards", str(shards), "--processes", "2",
            "--run-name", "orphans", "--set", f"paths.runs_dir={tmp_path}", "--set", "train.epochs=50",
            "--set", "train.batch_size=8", "--set", "train.checkpoint_every=5", "--set", "train.progress=false"]
    ckpt = tmp_path / "train" / "orphans" / "last.pt"
    proc = subprocess.Popen([LAKEDL, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _workers(psutil.Process(proc.pid))
    assert ckpt.exists() and len(workers) == 2, "the run did not reach its first checkpoint"
    proc.terminate()  # what a scheduler or pkill sends; the launcher has no handler that stops its workers
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} worker(s) kept running after their launcher died"


def test_model_families_and_embeddings_by_config(shards, tmp_path):
    from etl.core.config import ConfigError

    with pytest.raises(ConfigError, match="not bow"):
        train_cfg(shards, tmp_path, "model.embeddings=x.bin")
    with pytest.raises(ConfigError, match="unknown key 'model.rnn.hiden'"):
        train_cfg(shards, tmp_path, "model.name=rnn", "model.rnn.hiden=3")
    with pytest.raises(TrainError, match="glove100"):
        run_train(train_cfg(shards, tmp_path, "model.name=cnn", "model.embeddings=missing.bin"))
    import numpy as np

    from etl.core.wordvec import write_word2vec

    vectors = write_word2vec(tmp_path / "v.txt", ["good", "bad"], np.ones((2, 8), np.float32), binary=False)
    summary = run_train(train_cfg(shards, tmp_path, "model.name=cnn", "model.cnn.embed_dim=8",
                                  "model.cnn.filters=4", f"model.embeddings={vectors}", "train.epochs=1",
                                  "launcher.num_processes=1", "run.name=cnn1"))
    state = torch.load(tmp_path / "train" / "cnn1" / "best.pt", weights_only=True)
    assert state["config"]["model"] == "cnn" and state["config"]["embed_dim"] == 8
    assert summary["test"] is None  # the toy shards have no test split


def test_report_lists_the_worst_scored_test_texts(shards, tmp_path):
    import shutil

    from conftest import make_split

    from dl.train.report import write_report

    data = tmp_path / "toy"
    shutil.copytree(shards, data)
    make_split(data / "test", 120, 7)
    summary = run_train(train_cfg(data, tmp_path, "launcher.num_processes=1", "train.epochs=1", "run.name=rep",
                                  "train.batch_size=32"))
    report = Path(summary["report"]).read_text()
    assert "Worst-scored test examples" in report and "Confusion matrix" in report
    rows = report.split("Worst-scored test examples")[1].count("<tr>") - 1  # minus the header
    assert rows == 12 and "<td>row " in report  # shards without review_id: rows named by position
    worst = report.split("Worst-scored test examples")[1]
    assert worst.count('<span title="') >= 12 * 2  # every text as its tokens coloured by attribution
    assert report.count("negative") >= 2 and "positive" in report  # the label names, not 0/1
    with pytest.raises(FileNotFoundError, match="no result.json"):
        write_report(tmp_path)
