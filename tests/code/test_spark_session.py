"""The Spark session factory's embedded settings."""

from __future__ import annotations

import os
import sys

import pytest

from etl.core.config import SparkSettings
from etl.core.spark import embedded_conf, has_delta_jars, under_spark_submit

pytestmark = pytest.mark.spark


def test_embedded_session_settings(spark):
    conf = spark.sparkContext.getConf()
    assert spark.sparkContext.master == "local[2]"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert conf.get("spark.ui.enabled") == "false"
    same_python = os.path.realpath(sys.executable)  # make exports .venv/bin/python, pytest runs python3.11
    assert os.path.realpath(conf.get("spark.pyspark.python")) == same_python
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    # executors really run this interpreter (not the system python that lacks pandas)
    exe = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()
    assert [os.path.realpath(e) for e in exe] == [same_python]


def test_not_under_spark_submit_and_no_delta_jars_here(spark):
    assert under_spark_submit() is False
    assert has_delta_jars(spark) is False


def test_user_spark_conf_wins_and_loopback_only_for_local():
    conf = embedded_conf(SparkSettings(master="local[1]", conf={"spark.sql.shuffle.partitions": "11"}))
    assert conf["spark.sql.shuffle.partitions"] == "11"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    remote = embedded_conf(SparkSettings(master="spark://10.0.0.1:7077"))
    assert "spark.driver.bindAddress" not in remote
