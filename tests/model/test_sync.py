"""Gradient exchange (dl/engine/distributed.py): embedding gradients sent as the rows each rank touched, and
16-bit compression of the dense ones, give the gradient a dense all-reduce gives (two real processes, gloo,
under DDP and under Horovod), within float tolerance."""

from __future__ import annotations

import copy
import sys

import cloudpickle
import pytest
import torch
import torch.nn.functional as F

from dl.engine.distributed import SyncSettings, densify_grads, make_dist, sparse_embeddings
from dl.engine.launch import launch

VOCAB = 500
# horovod's Spark tasks unpickle the worker where tests/ is not importable: send this module's code with it
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class _Bag(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8, padding_idx=0)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, ids):
        return self.out(self.embed(ids).mean(1))


def _batch(rank: int, padding_only: bool = False):
    """Rank 0 draws ids from the whole vocabulary, rank 1 from its first half: the touched rows overlap
    in part, so the exchange must add rows both ranks touched and keep the rows only one did. With
    ``padding_only`` rank 1's batch is all padding: it touches no row and sends none."""
    g = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(0, VOCAB if rank == 0 else VOCAB // 2, (16, 12), generator=g)
    return ids * (0 if rank == 1 and padding_only else 1), torch.randint(0, 2, (16,), generator=g)


def _sync_worker(sync: dict, backend: str) -> dict:
    sync = dict(sync)
    padding_only = sync.pop("rank1_padding_only", False)
    dist = make_dist(backend)
    torch.manual_seed(0)
    model = _Bag()
    reference = copy.deepcopy(model)  # the same weights, never wrapped: the dense gradients, one rank at a time
    settings = SyncSettings(**sync)
    switched = sparse_embeddings(model) if settings.sparse_embeddings else []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    net, optimizer = dist.wrap(model, optimizer, find_unused=False, sync=settings)
    ids, labels = _batch(dist.rank, padding_only)
    optimizer.zero_grad()
    F.cross_entropy(net(ids), labels).backward()
    dist.synchronize(optimizer)
    exchanged_sparse = model.embed.weight.grad.is_sparse
    # DDP: our hook sent the rows (gloo's own sparse all-reduce crashed now and then); Horovod has no hooks
    hook = net._get_ddp_logging_data().get("comm_hook", "") if backend == "torch" else "horovod"
    densify_grads(model)
    expected = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}
    for r in range(dist.world_size):
        reference.zero_grad()
        ids, labels = _batch(r, padding_only)
        F.cross_entropy(reference(ids), labels).backward()
        for name, p in reference.named_parameters():
            expected[name] += p.grad / dist.world_size
    got = dict(model.named_parameters())
    error = {name: float((got[name].grad - want).abs().max() / want.abs().max()) for name, want in expected.items()}
    digest = str(hash(tuple(torch.cat([p.grad.flatten() for p in model.parameters()]).tolist())))
    result = {"switched": switched, "exchanged_sparse": exchanged_sparse, "relative_error": error,
              "same_gradient_on_every_rank": len(set(dist.gather(digest))) == 1,
              "touched_rows": int((expected["embed.weight"].abs().sum(1) > 0).sum()), "hook": hook}
    dist.close()
    return result


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["local", "horovod"])
@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_sparse_embedding_rows_and_compression_give_the_dense_all_reduce(kind, compression, request):
    spark = request.getfixturevalue("spark") if kind == "horovod" else None
    result = launch(_sync_worker, {"sparse_embeddings": True, "compression": compression}, kind, 2, spark=spark)
    assert result["switched"] == ["embed"]
    assert result["exchanged_sparse"]  # the rows, not the 500 x 8 table, went over the wire
    assert 100 < result["touched_rows"] < VOCAB  # both ranks' rows, some on one rank only
    assert result["same_gradient_on_every_rank"]
    error = result["relative_error"]
    assert error["embed.weight"] < 1e-6  # never compressed: rows are exact
    tolerance = 1e-6 if compression == "none" else 2e-3  # fp16: ~3 significant digits
    assert error["out.weight"] < tolerance and error["out.bias"] < tolerance
    if compression == "fp16":
        assert max(error["out.weight"], error["out.bias"]) > 0  # the compression did happen



@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["local", "horovod"])
def test_a_rank_whose_batch_touches_no_row_still_gets_the_others_rows(kind, request):
    spark = request.getfixturevalue("spark") if kind == "horovod" else None
    result = launch(_sync_worker, {"sparse_embeddings": True, "rank1_padding_only": True}, kind, 2, spark=spark)
    assert result["exchanged_sparse"] and result["same_gradient_on_every_rank"]
    assert result["hook"].startswith("exchange_hook") or result["hook"] == "horovod", result["hook"]
    assert 100 < result["touched_rows"] < VOCAB  # rank 0's rows only (padding has no gradient)
    assert max(result["relative_error"].values()) < 1e-6

def test_shared_and_frozen_tables_keep_dense_gradients():
    tied = _Bag()
    tied.out = torch.nn.Linear(8, VOCAB)
    tied.out.weight = tied.embed.weight  # a language model's tied input/output table: its gradient is dense
    frozen = _Bag()
    frozen.embed.weight.requires_grad_(False)
    assert sparse_embeddings(tied) == [] and not tied.embed.sparse
    assert sparse_embeddings(frozen) == []
    assert sparse_embeddings(_Bag()) == ["embed"]


def _accumulation_runs(shards, kind: str, processes: int, spark=None) -> tuple[dict, dict]:
    """The same 2 epochs with batches of 32, and with 2 accumulated micro-batches of 16 (no dropout, SGD)."""
    from worker_settings import worker_settings  # tests/model/worker_settings.py

    from dl.engine.optim import OptimSettings
    from dl.train.worker import train_worker

    def run(batch_size: int, accumulate: int) -> dict:
        s = worker_settings(shards, epochs=2, batch_size=batch_size, seed=3, model_options={"dropout": 0.0},
                            optim=OptimSettings(name="sgd", lr=0.2), sync=SyncSettings(accumulate=accumulate))
        return launch(train_worker, s, kind, processes, spark=spark)

    return run(32, 1), run(16, 2)


def test_accumulating_two_micro_batches_is_one_batch_of_twice_the_rows(odd_shards):
    whole, accumulated = _accumulation_runs(odd_shards, "local", 1)
    assert whole["steps"] == accumulated["steps"] == 46  # 705 rows: 23 steps of 32, or of 2 x 16, an epoch
    for name, tensor in whole["model"].state_dict().items():
        assert torch.allclose(tensor, accumulated["model"].state_dict()[name], atol=1e-5), name


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["local", "horovod"])
def test_accumulation_across_processes_exchanges_the_summed_micro_batches(odd_shards, kind, request):
    # DDP: no_sync around the first micro-batch's backward; Horovod: backward_passes_per_step=2. Either way
    # each step's update is that of one batch of 32 per process, so the epoch losses match (the second
    # epoch's only if the first's updates did)
    spark = request.getfixturevalue("spark") if kind == "horovod" else None
    whole, accumulated = _accumulation_runs(odd_shards, kind, 2, spark)
    assert whole["steps_by_rank"] == accumulated["steps_by_rank"] == [24, 24]  # one rank ends with a shadow step
    assert len(set(accumulated["weights_sha256_by_rank"])) == 1
    for a, b in zip(whole["history"], accumulated["history"]):
        assert a["samples"] == b["samples"] == 705
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
