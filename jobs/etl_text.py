"""Text ETL: review corpora -> silver Delta table + Parquet shards.

    spark-submit [--master ...] jobs/etl_text.py [options of `lakedl etl text`]

Same options as `lakedl etl text --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["etl", "text", *sys.argv[1:]])
