"""The names of lakedl's Delta tables, in one place: what each stage writes and reads under the table root
(``paths.tables_dir``). Stages take names from here instead of spelling them, so a rename is one edit and
``lakedl tables list`` output can be read against this file.

========================  ==============================================  =====================================
table                     written by                                      read by
========================  ==============================================  =====================================
``bronze_reviews``        ``lakedl bronze load`` (raw rows, every field    ``lakedl etl text`` (input.format=bronze)
                          as text, record_key)
``silver_<dataset>``      ``lakedl etl text`` (clean, typed, deduplicated) shard writing, ``lakedl score --source``
``quarantine_<dataset>``  text and image ETL (rejected rows + reason)      people; reconciliation counts
``etl_runs``              every bronze/text/image ETL run (one row each)   incremental reads (bronze_version)
``predictions``           ``lakedl score``                                 downstream consumers
``score_quarantine``      ``lakedl score`` (rows it could not score)       people
``score_runs``            ``lakedl score`` (one row per run, watermark)    the next incremental score run
========================  ==============================================  =====================================
"""

from __future__ import annotations

from pathlib import Path

BRONZE_REVIEWS = "bronze_reviews"
ETL_RUNS = "etl_runs"
PREDICTIONS = "predictions"
SCORE_QUARANTINE = "score_quarantine"
SCORE_RUNS = "score_runs"


def silver(dataset: str) -> str:
    """The cleaned table of a text dataset (``output.name`` of ``lakedl etl text``)."""
    return f"silver_{dataset}"


def quarantine(dataset: str) -> str:
    """The rejected rows of a text or image dataset, each with its reason."""
    return f"quarantine_{dataset}"


def lease_file(root: str | Path, table: str) -> Path:
    """The lease that keeps two scheduled runs off ``table`` at once (etl/core/lease.py)."""
    return Path(root) / "_leases" / f"{table}.json"
