"""Convert SST trees to canonical review JSON lines.

    spark-submit [--master ...] jobs/data_sst.py [options of `lakedl data sst`]

Same options as `lakedl data sst --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["data", "sst", *sys.argv[1:]])
