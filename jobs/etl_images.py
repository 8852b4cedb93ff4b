"""Image ETL: image sets -> validated, normalised images -> Petastorm datasets (+ quarantine table).

    spark-submit [--master ...] jobs/etl_images.py [options of `lakedl etl images`]

Same options as `lakedl etl images --help`; under spark-submit the cluster's master and resources are used.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    main(["etl", "images", *sys.argv[1:]])
