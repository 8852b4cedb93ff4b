"""What the worker needs from a distributed backend: rank, world size, a wrapped model and optimizer
with synchronized gradients and identical starting weights, a mean all-reduce, and uneven-input joins.

``none`` (one process), ``torch`` (torch.distributed + DDP, gloo on CPU / NCCL on GPU; ranks from
the RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT environment that torchrun, TorchDistributor and our local
launcher set) and ``horovod`` (``hvd.DistributedOptimizer``, parameters and optimizer state broadcast
from rank 0; ranks from ``horovod.spark.run`` or ``horovodrun``).

Uneven ends: ranks may own different numbers of batches. With every backend the loop runs the largest
rank's step count everywhere, and a rank out of data takes a *shadow step* (dl/engine/loop.py
``train_step``): its last batch's loss times zero, which contributes a zero gradient to the average (the
weighting DDP's ``join`` uses) while the rank steps its optimizer and schedule like the others, so every
rank holds the same weights and learning rate at every step. (DDP's ``join`` would shadow the all-reduces
but not the optimizer and scheduler steps, so a rank that joined early ran its LR schedule behind; it also
sets a process-wide ``warnings.simplefilter("once")``. Horovod 0.28 has no join for gradients.)
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Literal

import torch
from pydantic import Field

from etl.core.config import Section


class SyncSettings(Section):
    """How the ranks exchange gradients (``sync:`` in train.yml; only ``accumulate`` acts on one process)."""
    sparse_embeddings: bool = Field(True, description="exchange an embedding table's gradient as the rows the "
                                    "batch touched (allgather of rows, exact) instead of all-reducing the whole "
                                    "table; off automatically with train.l1/l2 (their gradient is dense) or a "
                                    "table shared with another layer (tied weights)")
    compression: Literal["none", "fp16", "bf16"] = Field("none", description="send dense gradients as 16-bit "
                                                        "floats (DDP comm hook / hvd.Compression.fp16; Horovod has "
                                                        "no bf16 and uses fp16): half the bytes, ~3 significant digits")
    accumulate: int = Field(1, ge=1, description="micro-batches of train.batch_size per optimizer step: their "
                            "gradients add up locally (DDP no_sync, Horovod backward_passes_per_step) and are "
                            "exchanged once per step; the step sees train.batch_size x accumulate rows per process. "
                            "Also on one process (a larger batch than memory holds)")
    interface: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:@-]+$", description="network interface the "
                                  "ranks exchange over (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME / "
                                  "HOROVOD_GLOO_IFACE); default: the one this host routes the rendezvous "
                                  "address through, found on each host")


def sparse_embeddings(model: torch.nn.Module) -> list[str]:
    """Switch every trainable embedding table that no other layer shares to sparse gradients (before the
    model is wrapped: DDP decides per parameter at construction); returns their module names."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    switched = []
    for name, module in model.named_modules():
        if (isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and module.weight.requires_grad
                and uses[id(module.weight)] == 1 and module.max_norm is None):
            module.sparse = True
            module.weight.register_hook(_coalesce)
            switched.append(name)
    return switched


def _coalesce(grad: torch.Tensor) -> torch.Tensor:
    """An embedding's sparse gradient has one entry per token of the batch; summed per row before it reaches
    ``.grad`` (where DDP's and Horovod's hooks pick it up), it is one entry per touched row: 2.2x fewer to
    exchange for a batch of 64 demo reviews, 3.8x for 512."""
    return grad.coalesce() if grad.is_sparse else grad


def densify_grads(model: torch.nn.Module) -> None:
    """After the exchange: sparse gradients (the rows every rank touched, summed and averaged) as dense
    tensors, which every optimizer, clipping and the gradient checks take."""
    for p in model.parameters():
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.to_dense()


def exchange_hook(compression: str):
    """A DDP comm hook: dense buckets all-reduced (as fp16/bf16 with ``compression``: torch's compress hooks),
    sparse ones (an embedding table's touched rows) exchanged by :func:`allgather_rows`: exact, never
    compressed, and on gloo's dense allgather rather than its sparse all-reduce, which killed a rank with
    SIGSEGV inside the backward now and then (CI at 7d5b5ff; bench/scaling.py's CNN under TorchDistributor)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    dense = {"none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
             "bf16": default_hooks.bf16_compress_hook}[compression]

    def hook(group, bucket):
        if not bucket.buffer().is_sparse:
            return dense(group, bucket)
        done: torch.futures.Future = torch.futures.Future()
        done.set_result(allgather_rows(bucket.buffer(), group))
        return done
    return hook


def allgather_rows(grad: torch.Tensor, group=None) -> torch.Tensor:
    """The mean over ranks of a sparse gradient, as a coalesced sparse tensor identical on every rank: each rank's
    row count, then its rows' indices and values padded to the largest count, gathered with dense allgathers
    (the rows both ranks touched add up; a rank that touched none sends nothing but its count)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()
    mine = values.shape[0]
    count = torch.tensor([mine], dtype=torch.int64)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    counts = [int(c) for c in counts]
    most = max(counts)
    padded_indices = indices.new_zeros((indices.shape[0], most))
    padded_indices[:, :mine] = indices
    padded_values = values.new_zeros((most, *values.shape[1:]))
    padded_values[:mine] = values
    gathered = []
    for padded in (padded_indices, padded_values):
        parts = [torch.empty_like(padded) for _ in range(world)]
        if most:
            dist.all_gather(parts, padded, group=group)
        gathered.append(parts)
    rows = torch.cat([part[:, :n] for part, n in zip(gathered[0], counts)], dim=1)
    sums = torch.cat([part[:n] for part, n in zip(gathered[1], counts)])
    # checked (indices in range: a bad row count from a peer raises here instead of corrupting memory later)
    return torch.sparse_coo_tensor(rows, sums, grad.shape, check_invariants=True).coalesce().div_(world)


class NoDist:
    rank, world_size, local_rank = 0, 1, 0
    interface: str | None = None  # what the ranks exchange over (None: one process, or the library's choice)

    @property
    def address(self) -> str | None:
        """This rank's address on the exchange interface: which host it ran on."""
        return interface_addresses().get(self.interface) if self.interface else None

    def max_int(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        return value

    def broadcast_state(self, model, optimizer) -> None:
        """After a resume: rank 0's weights and optimizer state everywhere (every rank read the same file;
        this makes it so even if the files differed)."""

    def no_sync(self, net):
        """Around the backward passes of all but the last micro-batch of a step: gradients stay local."""
        return contextlib.nullcontext()

    def synchronize(self, optimizer) -> None:
        """Make the averaged gradients visible (before clipping); DDP already averaged them in backward."""

    def step(self, optimizer, fn=None) -> None:
        """Apply the update (``fn`` replaces ``optimizer.step``, e.g. a gradient scaler's step)."""
        (fn or optimizer.step)()

    def wrap(self, model, optimizer, find_unused: bool = True, sync: SyncSettings | None = None, name: str = ""):
        """``(net, optimizer)``: the model as the backward passes go through it, the optimizer that steps it.
        ``name``: this part of a model wrapped part by part (a GAN's generator, discriminator), which
        names its tensors in the exchange apart from another part's."""
        return model, optimizer

    def mean(self, value: float) -> float:
        return value

    def gather(self, value: str) -> list[str]:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]

    def average_(self, tensor: torch.Tensor, name: str = "") -> torch.Tensor:
        """Replace ``tensor`` in place by its mean over ranks (model averaging, e.g. word2vec's matrices)."""
        return tensor

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Batch norm's running statistics (every floating-point buffer) averaged over ranks: each rank
        updates them from its own batches, and DDP no longer overwrites them with rank 0's at every forward
        (that broadcast is a collective before each step's forward: it cost ResNet-small 30% of its step at
        2x1). Called before every evaluation, so all ranks evaluate and save one model."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if buffer.is_floating_point():
                    self.average_(buffer, name=f"buffer.{name}")

    def close(self) -> None:
        pass


def interface_to(address: str) -> str | None:
    """The name of this host's interface whose address the kernel would send to ``address`` from (None if
    there is no route): the interface the ranks must bind for a rendezvous at ``address``."""
    import socket

    try:
        address = socket.gethostbyname(address)
    except OSError:
        return None
    own = interface_of(address)  # the rendezvous is on this host (rank 0's): its interface, not loopback's route
    if own:
        return own
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))  # a datagram socket's connect sends nothing; it only picks the route
            local = s.getsockname()[0]
    except OSError:
        return None
    return interface_of(local)


def interface_addresses() -> dict[str, str]:
    """This host's IPv4 address per interface (Linux: SIOCGIFADDR on each; interfaces without one left out)."""
    import fcntl
    import socket
    import struct

    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


def interface_of(ip: str) -> str | None:
    """The interface holding IPv4 address ``ip``."""
    return next((name for name, address in interface_addresses().items() if address == ip), None)


def bind_interface(forced: str | None, rendezvous: str | None, variables: tuple[str, ...]) -> str | None:
    """Point the collective library at one interface: ``forced`` (sync.interface), else what the user's
    environment already says, else the interface routing to the rendezvous address. On a host whose name
    resolves to 127.0.0.1 (a container, a namespace) gloo would otherwise advertise loopback to its peers."""
    name = forced or next((os.environ[v] for v in variables if os.environ.get(v)), None)
    if name is None and rendezvous:
        name = interface_to(rendezvous)
    if name:
        for variable in variables:
            os.environ[variable] = name
    return name


class TorchDist(NoDist):
    def __init__(self, interface: str | None = None) -> None:
        import torch.distributed as dist

        self.dist = dist
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        variables = ("NCCL_SOCKET_IFNAME",) if backend == "nccl" else ("GLOO_SOCKET_IFNAME",)
        if dist.is_initialized():
            self.interface = os.environ.get(variables[0])
        else:
            self.interface = bind_interface(interface, os.environ.get("MASTER_ADDR"), variables)
            dist.init_process_group(backend)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))

    def wrap(self, model, optimizer, find_unused: bool = True, sync: SyncSettings | None = None, name: str = ""):
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's weights at construction. ``find_unused``: some parameters may get no gradient
        # in a step, so DDP searches the graph for them each step; a model whose every parameter is used skips
        # that search. Gradients are views into DDP's buckets (no copy after the all-reduce). Buffers (batch norm's
        # running statistics) are not broadcast at every forward: the loop averages them before each evaluation
        # (``average_buffers``), as Horovod, which never broadcasts them, needs too. Sparse embedding
        # gradients (``sync.sparse_embeddings``, switched on by the caller) are an allgather of the touched rows
        # (``exchange_hook``). On GPU each process drives the one device its parameters live on.
        sync = sync or SyncSettings()
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused,
                                      gradient_as_bucket_view=True, forward_sync_buffers=False)
        if sync.compression != "none" or any(getattr(m, "sparse", False) for m in model.modules()):
            net.register_comm_hook(self.dist.group.WORLD, exchange_hook(sync.compression))
        return net, optimizer

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t.item() / self.world_size)

    def gather(self, value: str) -> list[str]:
        out: list = [None] * self.world_size
        self.dist.all_gather_object(out, value)
        return out

    def no_sync(self, net):
        return net.no_sync()

    def average_(self, tensor: torch.Tensor, name: str = "") -> torch.Tensor:
        self.dist.all_reduce(tensor)
        return tensor.div_(self.world_size)

    def max_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return int(t.item())

    def close(self) -> None:
        self.dist.destroy_process_group()


class HorovodDist(NoDist):
    def __init__(self, interface: str | None = None) -> None:
        import horovod.torch as hvd

        self.hvd = hvd
        # horovod.spark names the first of the interfaces every task has (it may be "lo", which hosts cannot
        # reach each other over): bind the one this host routes the rendezvous (the driver) through instead
        if not interface:
            os.environ.pop("HOROVOD_GLOO_IFACE", None)
        self.interface = bind_interface(interface, os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"),
                                        ("HOROVOD_GLOO_IFACE",))
        hvd.init()
        self.rank, self.world_size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)  # one process per GPU

    def wrap(self, model, optimizer, find_unused: bool = True, sync: SyncSettings | None = None, name: str = ""):
        hvd = self.hvd
        sync = sync or SyncSettings()
        prefix = f"{name}." if name else ""  # horovod matches tensors across ranks by name: parts apart
        hvd.broadcast_parameters([(prefix + k, v) for k, v in model.state_dict().items()], root_rank=0)
        # sparse embedding gradients: horovod allgathers their rows and values (sparse_as_dense=False)
        compression = _horovod_fp16(hvd) if sync.compression != "none" else hvd.Compression.none
        # backward_passes_per_step: the hooks all-reduce a gradient after that many backward passes (the
        # micro-batches of a step); a step with fewer (an epoch's last) is completed by synchronize()
        return model, hvd.DistributedOptimizer(optimizer, named_parameters=[(prefix + k, p) for k, p in
                                                                            model.named_parameters()],
                                               op=hvd.Average, compression=compression,
                                               backward_passes_per_step=sync.accumulate)

    def broadcast_state(self, model, optimizer) -> None:
        # only with state to send: on an empty state horovod takes a zero-gradient step to create one,
        # which would move weights under weight decay and shift Adam's step count
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        for part in getattr(optimizer, "named", {"": optimizer}).values():  # one per part (dl/engine/optim.py)
            self.hvd.broadcast_optimizer_state(part, root_rank=0)

    def synchronize(self, optimizer) -> None:
        optimizer.synchronize()

    def step(self, optimizer, fn=None) -> None:
        with optimizer.skip_synchronize():  # synchronize() ran before clipping
            (fn or optimizer.step)()

    def mean(self, value: float) -> float:
        return float(self.hvd.allreduce(torch.tensor([value], dtype=torch.float64), op=self.hvd.Average).item())

    def max_int(self, value: int) -> int:
        return int(self.hvd.allreduce(torch.tensor([value], dtype=torch.int64), op=self.hvd.Max).item())

    def gather(self, value: str) -> list[str]:
        return list(self.hvd.allgather_object(value))

    def average_(self, tensor: torch.Tensor, name: str = "") -> torch.Tensor:
        return self.hvd.allreduce_(tensor, op=self.hvd.Average, name=name or None)

    def close(self) -> None:
        self.hvd.shutdown()


def _horovod_fp16(hvd):
    """``hvd.Compression.fp16`` for the dense gradients; horovod 0.28 also hands it the sparse ones' results
    to decompress, with no context (they were never compressed), and fails on them: pass those through."""
    fp16 = hvd.Compression.fp16

    class DenseFP16(fp16):
        @staticmethod
        def decompress(tensor, ctx):
            return tensor if ctx is None else fp16.decompress(tensor, ctx)
    return DenseFP16


def make_dist(name: str, interface: str | None = None) -> NoDist:
    if name == "none":
        return NoDist()
    if name == "torch":
        return TorchDist(interface)
    if name == "horovod":
        return HorovodDist(interface)
    raise ValueError(f"unknown distributed backend {name!r}: none, torch or horovod")
