"""Submitted by test_cluster.py: what does the session factory give under spark-submit?"""

import json

from etl.core.config import SparkSettings
from etl.core.spark import get_spark, under_spark_submit

spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=3, driver_memory="9g"))
executors = spark.sparkContext.parallelize(range(4), 4).map(lambda _: __import__("socket").gethostname()).count()
print("PROBE " + json.dumps({
    "under_spark_submit": under_spark_submit(),
    "master": spark.sparkContext.master,
    "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
    "tasks": executors,
}))
spark.stop()
