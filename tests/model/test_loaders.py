"""Shard loaders: every row exactly once per epoch across ranks and workers, seeded shuffling, padding."""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from dl.data.loaders import ParquetShardDataset, list_row_groups, pad_collate, petastorm_loader

N = 1000
MAX_LEN = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three files with uneven row groups, ragged ids and fixed input_ids, like the text ETL writes."""
    root = tmp_path_factory.mktemp("shards") / "train"
    root.mkdir()
    start = 0
    for f, (rows, group) in enumerate([(450, 100), (300, 64), (250, 250)]):
        ids = [[(start + i) % 50 + 4] * ((start + i) % MAX_LEN + 1) for i in range(rows)]
        table = pa.table({
            "review_id": [f"r{start + i:04d}" for i in range(rows)],
            "row": pa.array(range(start, start + rows), pa.int64()),
            "ids": pa.array(ids, pa.list_(pa.int32())),
            "length": pa.array([len(x) for x in ids], pa.int32()),
            "input_ids": pa.array([x + [0] * (MAX_LEN - len(x)) for x in ids], pa.list_(pa.int32())),
            "sentiment": pa.array([(start + i) % 2 for i in range(rows)], pa.int8()),
        })
        pq.write_table(table, root / f"part-{f}.parquet", row_group_size=group)
        start += rows
    (root / "_SUCCESS").write_text("")
    return root


def ids_seen(loader) -> Counter:
    seen = Counter()
    for batch in loader:
        seen.update(batch["review_id"] if "review_id" in batch else [])
    return seen


def test_row_groups_are_listed_in_a_fixed_order(shards):
    units = list_row_groups(shards)
    assert sum(u.rows for u in units) == N
    assert len(units) == 5 + 5 + 1
    assert units == list_row_groups(shards)


@pytest.mark.parametrize("world_size, workers", [(1, 0), (2, 0), (2, 2), (3, 2)])
def test_every_row_once_per_epoch_across_ranks_and_workers(shards, world_size, workers):
    seen = Counter()
    for rank in range(world_size):
        ds = ParquetShardDataset(shards, ["review_id", "sentiment"], rank, world_size, seed=7, buffer_size=50)
        ds.set_epoch(3)
        loader = DataLoader(ds, batch_size=32, num_workers=workers,
                            collate_fn=lambda rows: {"review_id": [r["review_id"] for r in rows]})
        got = ids_seen(loader)
        assert sum(got.values()) == ds.rows_this_epoch()
        seen.update(got)
    assert len(seen) == N and set(seen.values()) == {1}


def test_shuffle_is_seeded_and_changes_with_the_epoch(shards):
    def order(seed, epoch):
        ds = ParquetShardDataset(shards, ["review_id"], seed=seed, buffer_size=100)
        ds.set_epoch(epoch)
        return [r["review_id"] for r in ds]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert sorted(order(1, 1)) == sorted(order(2, 0))
    plain = ParquetShardDataset(shards, ["review_id"], shuffle=False)
    assert [r["review_id"] for r in plain] == [f"r{i:04d}" for i in range(N)]


def test_pad_collate_pads_ragged_ids_and_keeps_lengths(shards):
    ds = ParquetShardDataset(shards, ["review_id", "ids", "sentiment"], shuffle=False)
    rows = [r for _, r in zip(range(4), ds)]
    batch = pad_collate(rows, pad_id=0)
    assert batch["ids"].shape == (4, 4) and batch["ids"].dtype == torch.long
    assert batch["ids_lengths"].tolist() == [1, 2, 3, 4]
    assert batch["ids"][0].tolist() == [4, 0, 0, 0]
    assert batch["sentiment"].tolist() == [0, 1, 0, 1]
    assert "review_id" not in batch
    capped = pad_collate(rows, max_len=2)
    assert capped["ids"].shape == (4, 2) and capped["ids_lengths"].tolist() == [1, 2, 2, 2]


def test_bad_arguments_are_refused(shards, tmp_path):
    with pytest.raises(ValueError, match="rank 2 is not in"):
        ParquetShardDataset(shards, ["ids"], rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in the shards"):
        ParquetShardDataset(shards, ["nope"])
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        ParquetShardDataset(tmp_path, ["ids"])


def test_petastorm_loader_sees_every_row_once_across_two_shards(shards):
    seen = Counter()
    for rank in range(2):
        # petastorm's torch loader carries numbers only: track rows by the integer `row` column
        with petastorm_loader(shards, ["row", "input_ids", "sentiment"], batch_size=64, rank=rank,
                              world_size=2, seed=3) as loader:
            for batch in loader:
                assert batch["input_ids"].shape[1] == MAX_LEN
                seen.update(batch["row"].tolist())
    assert len(seen) == N and set(seen.values()) == {1}


@pytest.mark.parametrize("world_size, workers", [(1, 0), (2, 2)])
def test_batch_mode_sees_every_row_once_and_matches_pad_collate(shards, world_size, workers):
    seen = Counter()
    for rank in range(world_size):
        ds = ParquetShardDataset(shards, ["row", "ids", "input_ids", "sentiment"], rank, world_size, seed=5,
                                 buffer_size=120, batch_size=32)
        for batch in DataLoader(ds, batch_size=None, num_workers=workers):
            assert batch["ids"].shape[0] == batch["row"].shape[0] <= 32
            assert batch["input_ids"].shape[1] == MAX_LEN
            # each padded row equals its fixed-length twin, and lengths match the non-pad prefix
            width = batch["ids"].shape[1]
            assert torch.equal(batch["ids"], batch["input_ids"][:, :width])
            assert torch.equal(batch["ids_lengths"], (batch["ids"] != 0).sum(1))
            seen.update(batch["row"].tolist())
    assert len(seen) == N and set(seen.values()) == {1}


def test_batch_mode_order_is_seeded(shards):
    def rows(seed):
        ds = ParquetShardDataset(shards, ["row"], seed=seed, buffer_size=200, batch_size=50)
        return [r for b in ds for r in b["row"].tolist()]

    assert rows(1) == rows(1) and rows(1) != rows(2) and sorted(rows(1)) == list(range(N))
    plain = ParquetShardDataset(shards, ["row"], shuffle=False, batch_size=50)
    assert [r for b in plain for r in b["row"].tolist()] == list(range(N))


@pytest.mark.parametrize("world_size", [1, 2])
def test_length_buckets_pad_less_and_still_see_every_row_once(shards, world_size):
    def run(buckets: int, seed: int = 5):
        seen, padded, batches = Counter(), 0, []
        for rank in range(world_size):
            ds = ParquetShardDataset(shards, ["row", "ids"], rank, world_size, seed=seed, buffer_size=300,
                                     batch_size=32, length_buckets=buckets)
            mine = list(DataLoader(ds, batch_size=None))
            assert len(mine) == math.ceil(ds.rows_this_epoch() / 32)  # what the LR schedule is sized by
            for batch in mine:
                assert torch.equal(batch["ids_lengths"], (batch["ids"] != 0).sum(1))
                seen.update(batch["row"].tolist())
                padded += batch["ids"].numel()
                batches.append(batch["row"].tolist())
        assert len(seen) == N and set(seen.values()) == {1}
        return padded, batches

    plain, _ = run(0)
    bucketed, order = run(4)
    assert bucketed < 0.75 * plain  # lengths 1..8 mixed: most plain batches pad to 8
    assert order == run(4)[1] and order != run(4, seed=6)[1]
    # the batches come in random order, not shortest-first (a row's length is row % MAX_LEN + 1)
    widths = [max(r % MAX_LEN + 1 for r in rows) for rows in order]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)


def test_length_buckets_need_batches_of_a_ragged_column(shards):
    with pytest.raises(ValueError, match="length_buckets needs batch_size"):
        ParquetShardDataset(shards, ["row", "ids"], length_buckets=4)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_keep_if_trains_only_on_labelled_rows_and_counts_them(shards, batch_size):
    seen = Counter()
    batches = 0
    for rank in range(2):
        ds = ParquetShardDataset(shards, ["row"], rank, 2, seed=1, buffer_size=100, batch_size=batch_size,
                                 keep_if="sentiment")  # the odd rows only
        if batch_size:
            got = [b["row"].tolist() for b in DataLoader(ds, batch_size=None)]
            assert len(got) == -(-ds.rows_this_epoch() // batch_size)  # the step count the worker plans with
            batches += len(got)
            rows = [r for b in got for r in b]
        else:
            rows = [r["row"] for r in ds]
        assert len(rows) == ds.rows_this_epoch()
        seen.update(rows)
    assert sorted(seen) == list(range(1, N, 2)) and set(seen.values()) == {1}


@pytest.mark.parametrize("keep_if", [None, "sentiment"])
def test_a_single_row_group_is_split_so_every_rank_gets_data(tmp_path, keep_if):
    """A small split written as one row group (SST's 8,540 training sentences are) must still feed every
    rank: otherwise one process trains alone while the others wait."""
    rows = 301
    pq.write_table(pa.table({"review_id": [f"r{i}" for i in range(rows)], "sentiment": pa.array([i % 2 for i in range(rows)], pa.int8()),
                             "ids": pa.array([[i % 50 + 4] for i in range(rows)], pa.list_(pa.int32()))}),
                   tmp_path / "one.parquet")
    assert len(list_row_groups(tmp_path)) == 1
    seen, per_rank = Counter(), []
    for rank in range(2):
        ds = ParquetShardDataset(tmp_path, ["review_id", "sentiment"], rank, 2, seed=1, buffer_size=16, keep_if=keep_if)
        got = ids_seen(DataLoader(ds, batch_size=16, collate_fn=lambda rs: {"review_id": [r["review_id"] for r in rs]}))
        assert sum(got.values()) == ds.rows_this_epoch()
        per_rank.append(sum(got.values()))
        seen.update(got)
    expected = {f"r{i}" for i in range(rows) if keep_if is None or i % 2}
    assert set(seen) == expected and set(seen.values()) == {1}
    assert min(per_rank) >= len(expected) // 2 - 1  # an even split, not 301 rows on one rank


@pytest.mark.parametrize("keep_if", [None, "sentiment"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_equal_row_counts_from_uneven_row_groups(shards, keep_if, world_size):
    """Row groups of 250, 100, 64 and 44 rows: whole groups dealt to ranks leave one rank with far more steps
    than another (which waits them out); the cut into equal runs of rows leaves at most one row apart, in every
    epoch's permutation, and still every row once."""
    for epoch in range(4):
        seen, counts = Counter(), []
        for rank in range(world_size):
            ds = ParquetShardDataset(shards, ["row"], rank, world_size, seed=5, batch_size=32, keep_if=keep_if)
            ds.set_epoch(epoch)
            rows = [r for b in DataLoader(ds, batch_size=None) for r in b["row"].tolist()]
            assert len(rows) == ds.rows_this_epoch()
            counts.append(len(rows))
            seen.update(rows)
        assert max(counts) - min(counts) <= 1, counts
        expected = range(1, N, 2) if keep_if else range(N)
        assert sorted(seen) == list(expected) and set(seen.values()) == {1}
