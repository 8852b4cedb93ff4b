"""Jobs submitted with spark-submit to a real Spark standalone cluster (master + 2 workers on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from etl.core.standalone import read_cluster, start_cluster
from etl.core.tables import TableStore

pytestmark = pytest.mark.distributed
REPO = Path(__file__).resolve().parents[2]


def report_of(out: subprocess.CompletedProcess) -> dict:
    """spark-submit merges the driver's stderr (our log lines) into stdout: the JSON report starts at "{"."""
    lines = out.stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{"):]))


def test_the_cluster_is_recorded_and_refuses_a_second_start(cluster):
    assert cluster.master_url.startswith("spark://127.0.0.1:")
    assert read_cluster(cluster.state_dir).pids == cluster.pids
    with pytest.raises(Exception, match="already recorded"):
        start_cluster(cluster.state_dir)


def test_session_factory_keeps_the_cluster_settings_under_spark_submit(cluster, submit):
    out = submit(REPO / "tests" / "jobs" / "probe_session.py")
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["under_spark_submit"] is True
    assert probe["master"] == cluster.master_url            # not the local[1] we asked for
    assert probe["shuffle_partitions"] == "200"              # Spark's default, not our embedded 3
    assert probe["tasks"] == 4


def test_bronze_job_runs_on_the_cluster_executors(cluster, submit, raw_data, tmp_path):
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    shutil.copy(raw_data / "reviews" / "vader_amazon.jsonl", reviews)
    out = submit(REPO / "jobs" / "load_bronze.py", "--input", str(reviews),
                 "--set", f"paths.tables_dir={tmp_path / 'tables'}")
    assert out.returncode == 0, out.stderr[-3000:]
    report = report_of(out)
    assert report["rows_read"] == report["rows_inserted"] == 3708
    assert TableStore(tmp_path / "tables").count("bronze_reviews") == 3708
    # the work ran in executor JVMs started by both workers, not in a local-mode driver
    launched = [Path(log).read_text().count("Asked to launch executor") for log in cluster.logs[1:]]
    assert all(n >= 1 for n in launched), launched


def test_text_etl_job_runs_on_the_cluster(submit, raw_data, tmp_path):
    out = submit(REPO / "jobs" / "etl_text.py", "--input", str(raw_data / "reviews" / "vader_tweets.jsonl"),
                 "--set", f"paths.tables_dir={tmp_path / 'tables'}", "--set", f"output.shards_dir={tmp_path / 'shards'}",
                 conf=("spark.sql.shuffle.partitions=4",))  # a cluster setting, as a user would pass it
    assert out.returncode == 0, out.stderr[-3000:]
    report = report_of(out)
    assert report["rows_read"] == report["rows_kept"] == 4200
    assert TableStore(tmp_path / "tables").count("silver_reviews") == 4200
    assert sum(report["rows_per_split"].values()) == 4200
