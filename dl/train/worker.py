"""The training worker: the function every launcher starts on every rank for ``lakedl train``. It picks the
data adapter for the model family (text shards or an image dataset) and runs the engine's loop on it."""

from __future__ import annotations

from dl.data.images import GanData, ImageData, is_image_model
from dl.data.text import TextData
from dl.engine.distributed import make_dist
from dl.engine.loop import Amp, fit, pick_device, seed_everything
from dl.engine.settings import WorkerSettings


def train_worker(s: WorkerSettings, backend: str = "none") -> dict:
    """Train on ``<shards>/train`` (this rank's row groups) and evaluate on all of ``<shards>/dev``;
    returns the history, the step count, a digest of the final weights and (one process) the model."""
    dist = make_dist(backend, s.sync.interface)
    try:
        return _train(s, dist)
    finally:
        dist.close()


def training_data(s: WorkerSettings, rank: int, world_size: int):
    """This rank's data adapter for the model family: an image dataset (for a GAN's two phases, or one model)
    or text shards."""
    if s.train.task == "generate":
        return GanData(s, rank, world_size)
    return (ImageData if is_image_model(s.model.name) else TextData)(s, rank, world_size)


def _train(s: WorkerSettings, dist) -> dict:
    device = pick_device(s.train.device, dist.local_rank)
    amp = Amp(s.train.amp, device)
    seed_everything(s.train.seed)
    data = training_data(s, dist.rank, dist.world_size)
    try:
        return fit(s, dist, device, amp, data)
    finally:
        data.close()
