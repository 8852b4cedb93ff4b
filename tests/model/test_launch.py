"""Launchers: two real processes (gloo) locally and via TorchDistributor, identical weights on every rank,
clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from worker_settings import worker_settings  # tests/model/worker_settings.py

from dl.engine.launch import LaunchError, check_launch, launch
from dl.engine.optim import OptimSettings, ScheduleSettings
from dl.engine.settings import DataSettings, WorkerSettings
from dl.train.worker import train_worker

REPO = Path(__file__).resolve().parents[2]


def settings(root, **kw):
    return worker_settings(root, epochs=2, batch_size=32, optim=OptimSettings(name="adam", lr=0.02), seed=3, **kw)


@pytest.mark.distributed
def test_local_two_processes_keep_identical_weights_and_learning_rates(odd_shards):
    # one rank 11 batches an epoch, the other 12: under DDP too the short rank takes a shadow step, so both
    # step their optimizer and cosine schedule 24 times with the same LR at every step
    result = launch(train_worker, settings(odd_shards, schedule=ScheduleSettings(name="cosine")), "local", 2)
    assert result["world_size"] == 2
    assert len(set(result["weights_sha256_by_rank"])) == 1
    assert result["steps_by_rank"] == [24, 24]
    assert len(set(result["lr_sha256_by_rank"])) == 1
    assert [h["samples"] for h in result["history"]] == [705, 705]  # every labelled row once per epoch across ranks
    assert result["history"][-1]["dev_sentiment_accuracy"] >= 0.9


@pytest.mark.distributed
@pytest.mark.spark
def test_torch_distributor_two_processes(spark, shards):
    result = launch(train_worker, settings(shards), "torch_distributor", 2, spark=spark)
    assert result["world_size"] == 2 and len(set(result["weights_sha256_by_rank"])) == 1
    assert [h["samples"] for h in result["history"]] == [720, 720]
    assert result["history"][-1]["dev_sentiment_accuracy"] >= 0.9


@pytest.mark.distributed
@pytest.mark.spark
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_horovod_on_spark_two_processes_with_uneven_shards(spark, odd_shards, schedule):
    # 705 labelled rows: one rank owns 352 (11 batches), the other 353 (12 batches), so the first ends each
    # epoch with a shadow step. cosine's length depends on the steps per epoch: every rank must plan with the
    # same count (Horovod never re-syncs the weights, so a rank-local count makes the ranks diverge)
    result = launch(train_worker, settings(odd_shards, clip_norm=1.0, schedule=ScheduleSettings(name=schedule)),
                    "horovod", 2, spark=spark)
    assert result["world_size"] == 2 and len(set(result["weights_sha256_by_rank"])) == 1
    assert result["steps_by_rank"] == [24, 24] and len(set(result["lr_sha256_by_rank"])) == 1
    assert [h["samples"] for h in result["history"]] == [705, 705]  # shadow steps add no rows
    assert result["history"][-1]["dev_sentiment_accuracy"] >= 0.9


def test_misconfiguration_is_refused_before_launch():
    with pytest.raises(LaunchError, match="only 2 slots"):
        check_launch("local", 3, slots=2)
    with pytest.raises(LaunchError, match="no CUDA device"):
        check_launch("local", 1, use_gpu=True)
    with pytest.raises(LaunchError, match="not one of"):
        check_launch("mpi", 1)
    with pytest.raises(LaunchError, match="at least 1"):
        check_launch("local", 0)
    with pytest.raises(LaunchError, match="only 2 slots.*Spark task slots"):
        check_launch("horovod", 3, slots=2)
    with pytest.raises(LaunchError, match="needs a SparkSession"):
        launch(train_worker, WorkerSettings(DataSettings(shards="x")), "torch_distributor", 2)


@pytest.mark.distributed
def test_a_failing_worker_is_reported(tmp_path):
    with pytest.raises(LaunchError, match="local launch with 2 processes failed"):
        launch(train_worker, WorkerSettings(DataSettings(shards=str(tmp_path / "missing"))), "local", 2)


def _aborting_worker(settings, backend):
    if int(os.environ["RANK"]) == 1:
        os.abort()  # what a C++ exception escaping a gloo thread does
    return {}


@pytest.mark.distributed
def test_a_worker_killed_by_a_native_abort_is_reported_with_its_python_stack(capfd):
    with pytest.raises(LaunchError, match="process 1 terminated with signal SIGABRT") as failed:
        launch(_aborting_worker, WorkerSettings(DataSettings(shards="unused")), "local", 2)
    assert "process 1 killed by SIGABRT" in str(failed.value)  # how every process ended
    err = capfd.readouterr().err
    assert "Fatal Python error: Aborted" in err and "in _aborting_worker" in err


def _ddp_ending_worker(settings, backend):
    """The end of every DDP run: a DDP model (which pins the gloo process group and its threads to the end
    of the process), a last gather, return; and an exit handler that must never run."""
    import atexit

    import torch

    from dl.engine.distributed import make_dist

    dist = make_dist(backend)
    dist.wrap(torch.nn.Linear(3, 2), None)
    ranks = dist.gather(str(dist.rank))
    dist.close()
    atexit.register((Path(settings.data.shards) / f"finalized-by-rank{dist.rank}").touch)
    return {"ranks": ranks}


@pytest.mark.distributed
def test_ddp_workers_leave_before_the_interpreter_finalizes(tmp_path):
    # A gloo thread that frees a collective's tensors after the interpreter began finalizing kills the
    # process with SIGABRT though training finished (one toy LM run in ~15 here). A finished worker leaves
    # from the first exit handler instead, before finalizing: handlers registered earlier never run.
    settings = WorkerSettings(DataSettings(shards=str(tmp_path)))
    assert launch(_ddp_ending_worker, settings, "local", 2) == {"ranks": ["0", "1"]}
    assert not list(tmp_path.glob("finalized-by-*"))


@pytest.mark.parametrize("ending, code", [("print('done', end='')", 0), ("raise ValueError('after the worker')", 1)])
def test_a_finished_worker_exits_with_its_status_and_output(ending, code):
    script = f"import dl.engine.launch; dl.engine.launch._succeeded(); {ending}"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == code, done.stderr[-2000:]
    assert (done.stdout == "done") if code == 0 else ("ValueError: after the worker" in done.stderr)


@pytest.mark.distributed
def test_two_ranks_score_half_of_dev_each_and_report_the_whole_split(odd_shards, tmp_path):
    # each rank evaluates its equal share of dev and the predictions are gathered: the figures are those one
    # process computes over all of dev with the same weights (the last epoch's, saved in last.pt)
    from dl.data.text import TextData
    from dl.engine.checkpoint import read_checkpoint
    from dl.models import rebuild

    s = settings(odd_shards, task="multitask", checkpoint_dir=str(tmp_path))
    result = launch(train_worker, s, "local", 2)
    state = read_checkpoint(tmp_path / "last.pt")
    model = rebuild(state["config"])
    model.load_state_dict(state["model"])
    whole = TextData(s, 0, 1).evaluate(model, "dev", "cpu")
    last = result["history"][-1]
    assert {k: last[f"dev_{k}"] for k in whole} == whole
    assert set(whole) >= {"sentiment_accuracy", "rating_accuracy", "rating_reg_mae"}
