"""Batch scoring: an inference bundle -> predictions MERGEd into a Delta table.

    spark-submit [--master ...] jobs/score.py --bundle DIR (--input PATH | --source TABLE) [options]

Same options as `lakedl score --help`. The scoring UDF runs on the executors, loading the bundle once per
Python worker; ship the bundle directory where every executor can read it (a shared path, or
`--files`/`--archives`).
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["score", *sys.argv[1:]])
