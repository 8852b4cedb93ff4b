"""What the training loop (dl/engine/loop.py) needs from a dataset: ``TrainData``. The text shards
(dl/data/text.py) and the image datasets (dl/data/images.py) implement it; a new kind of data is a new
class with these members, and the loop, the launchers and checkpoint/resume work unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch


class TrainData(Protocol):
    tasks: list[str]  # what the loss and the metrics cover, e.g. ["sentiment"], ["class"], ["lm"]
    fingerprint: str  # a digest of what the inputs depend on (the tokenizer, the classes); resume checks it
    fingerprint_of: str  # what the fingerprint is of, for the error message
    label_map: dict  # class names per task, saved in checkpoints and bundles
    every_parameter_used: bool  # every parameter gets a gradient every step (DDP need not look for unused ones)

    def build_model(self) -> torch.nn.Module:
        """The model for this data (vocabulary size, image shape, classes), the same on every rank."""

    def planned_steps(self) -> int:
        """This rank's optimizer steps per epoch (sizes the LR schedule before the first epoch)."""

    def epoch(self, epoch: int) -> tuple[int, Iterator[dict[str, torch.Tensor]]]:
        """This rank's batch count and batches for ``epoch`` (shuffled with seed + epoch)."""

    def loss(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of ``batch`` under ``net`` (the wrapped model)."""

    def batch_len(self, batch: dict[str, torch.Tensor]) -> int:
        """Examples in ``batch``."""

    def has_test(self) -> bool:
        """Whether a test split exists (evaluated once, with the weights chosen on dev)."""

    def evaluate(self, model: torch.nn.Module, split: str, device: Any, detail: bool = False, dist: Any = None) -> dict:
        """Metrics of ``split`` (dev, test, train); ``detail`` adds per-class figures. Every rank calls it with the
        same weights and its ``dist`` (dl/engine/distributed.py): an adapter may score a share of the split per
        rank and gather (text does), or score all of it on every rank (images)."""

    def dev_metric(self, metrics: dict) -> float:
        """The one number model selection and early stopping watch (higher is better)."""

    def close(self) -> None:
        """Stop reader threads."""
