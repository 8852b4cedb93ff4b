"""Training: the ETL's shards -> a trained model, checkpoint and MLflow run.

    spark-submit [--master ...] jobs/train.py [options of `lakedl train`]

Same options as `lakedl train --help`. Under spark-submit the torch_distributor and horovod launchers
run their processes as Spark tasks on the cluster's executors (barrier mode); `local` runs on the driver.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
