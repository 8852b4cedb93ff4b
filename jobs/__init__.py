"""Thin entry points: the ``lakedl`` CLI and one spark-submit script per job."""
