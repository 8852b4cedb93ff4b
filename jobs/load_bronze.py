"""Load raw reviews into the bronze Delta table.

    spark-submit [--master ...] jobs/load_bronze.py [options of `lakedl bronze load`]

Same options as `lakedl bronze load --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["bronze", "load", *sys.argv[1:]])
