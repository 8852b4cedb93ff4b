"""The end-to-end demo.

    spark-submit [--master ...] jobs/demo.py [options of `lakedl demo`]

Same options as `lakedl demo --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["demo", *sys.argv[1:]])
