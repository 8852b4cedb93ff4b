"""Hyper-parameter search: trials of the train job as Spark tasks on a shared Optuna study.

    spark-submit [--master ...] jobs/tune.py --space conf/spaces/lstm.yml [options of `lakedl tune`]

Same options as `lakedl tune --help`. On a cluster set tune.storage to a database every executor reaches
(e.g. --set tune.storage=postgresql://...) and paths.runs_dir to storage the executors share.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
