"""`spark-submit jobs/train.py` on the Spark standalone test cluster (master + 2 one-core workers on
127.0.0.1): the distributed launchers start their processes as tasks in the executors, not in local mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.spark]
REPO = Path(__file__).resolve().parents[2]


def _executors_that_ran_tasks(cluster, since: set[Path]) -> list[Path]:
    """Executor stderr logs of applications started after ``since`` that ran at least one task."""
    logs = [p for p in Path(cluster.state_dir).glob("work-*/app-*/*/stderr") if p.parent.parent not in since]
    return [p for p in logs if "Running task" in p.read_text(errors="replace")]


@pytest.mark.parametrize("launcher", ["torch_distributor", "horovod"])
def test_train_job_runs_its_processes_on_the_executors(cluster, submit, shards, tmp_path, launcher):
    before = set(Path(cluster.state_dir).glob("work-*/app-*"))
    out = submit(REPO / "jobs" / "train.py", "--shards", str(shards), "--launcher", launcher, "--processes", "2",
                 "--run-name", "c", "--set", f"paths.runs_dir={tmp_path}", "--set", "train.epochs=2",
                 "--set", "train.batch_size=32", "--set", "optim.lr=0.02", "--set", "train.progress=false")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    result = json.loads((tmp_path / "train" / "c" / "result.json").read_text())
    assert result["launcher"] == launcher and result["processes"] == 2
    assert result["weights_identical_across_ranks"]
    assert result["final"]["dev_sentiment_accuracy"] >= 0.9
    # both workers' executors ran a task of this application (one process each: 1 core per worker)
    ran = _executors_that_ran_tasks(cluster, before)
    assert {p.parts[-4] for p in ran} == {"work-0", "work-1"}, ran
