"""Deterministic train/dev/test splits by a seeded hash of a row's id, shared by the text and image ETLs:
the same id always lands in the same split, so an incremental run never moves a row."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def split_bucket(id_col: str, seed: int) -> Column:
    """A row's place in [0, 1) from a seeded hash of its id: the same id always lands in the same place."""
    return (F.xxhash64(F.col(id_col), F.lit(seed)) % 10_000 + 10_000) % 10_000 / 10_000.0


def hashed_split(bucket: Column, train: float, dev: float) -> Column:
    """train below ``train``, dev in the next ``dev``, test for the rest."""
    return F.when(bucket < train, "train").when(bucket < train + dev, "dev").otherwise("test")
