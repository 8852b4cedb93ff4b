"""Epoch-end callbacks: after each epoch's dev evaluation the loop asks each one whether to stop.

A callback is any picklable object with ``name``, ``rank0_only`` and ``__call__(end: EpochEnd) -> bool``
(it is sent to every worker process). The loop combines the answers across ranks, so every rank stops
after the same epoch. ``EarlyStopping`` and ``StopAtTarget`` are here; a search's pruning is ``dl.tune.study.Pruning``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    score: float  # this epoch's dev metric (higher is better)
    best: float  # the best dev metric so far, this epoch included
    stale: int  # epochs since the best one
    rank: int


class EpochCallback(Protocol):
    name: str
    rank0_only: bool  # decided on rank 0 alone (e.g. it talks to a study's storage)

    def __call__(self, end: EpochEnd) -> bool: ...


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after ``patience`` epochs without a dev improvement."""

    patience: int
    name: str = "early_stopping"
    rank0_only: bool = False

    def __call__(self, end: EpochEnd) -> bool:
        return end.stale > self.patience


@dataclass(frozen=True)
class StopAtTarget:
    """Stop after the first epoch whose dev metric reaches ``target``."""

    target: float
    name: str = "target_reached"
    rank0_only: bool = False

    def __call__(self, end: EpochEnd) -> bool:
        return end.score >= self.target


def stop_reason(callbacks, end: EpochEnd, dist) -> str | None:
    """The name of the first callback that asks to stop (the same answer on every rank), else None."""
    for cb in callbacks:
        mine = cb(end) if (end.rank == 0 or not cb.rank0_only) else False
        if dist.max_int(int(bool(mine))):
            return cb.name
    return None
