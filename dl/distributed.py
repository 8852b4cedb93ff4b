"""What the worker needs from a distributed backend: rank, world size, a wrapped model and optimizer
with synchronized gradients and identical starting weights, a mean all-reduce, and uneven-input joins.

``none`` (one process) and ``torch`` (torch.distributed + DDP, gloo on CPU / NCCL on GPU; ranks from
the RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT environment that torchrun, TorchDistributor and our local
launcher set). A Horovod backend is open work (see the issue notes).
"""

from __future__ import annotations

import contextlib
import os

import torch


class NoDist:
    rank, world_size, local_rank = 0, 1, 0

    def wrap(self, model, optimizer):
        return model, optimizer

    def mean(self, value: float) -> float:
        return value

    def gather(self, value: str) -> list[str]:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]

    def join(self, model):
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class TorchDist(NoDist):
    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))

    def wrap(self, model, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's weights at construction; the heads a task does not use get no gradient
        return DistributedDataParallel(model, find_unused_parameters=True), optimizer

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t.item() / self.world_size)

    def gather(self, value: str) -> list[str]:
        out: list = [None] * self.world_size
        self.dist.all_gather_object(out, value)
        return out

    def join(self, model):
        return model.join()  # ranks with fewer batches shadow the others' all-reduces

    def close(self) -> None:
        self.dist.destroy_process_group()


def make_dist(name: str) -> NoDist:
    if name == "none":
        return NoDist()
    if name == "torch":
        return TorchDist()
    raise ValueError(f"unknown distributed backend {name!r}: none or torch")
