"""Loaders over the ETL's Parquet shards, sharded by rank: every row is seen exactly once per epoch
across all ranks and DataLoader workers.

* ``ParquetShardDataset`` — native pyarrow ``IterableDataset``: the unit of work is a row group; the
  row groups of all files are listed in a fixed order, permuted with ``seed + epoch``, laid end to end
  and cut into equal runs of rows, one per rank (``rank_share``: a row group across a cut is sliced),
  then dealt out to DataLoader workers, and read with pyarrow. With
  ``batch_size`` it yields ready tensor batches built column-wise from Arrow (use
  ``DataLoader(ds, batch_size=None)``): rows are shuffled within a seeded buffer of row groups and
  ragged columns (``ids``) are padded with numpy; ``length_buckets=k`` sorts each run of k batches'
  rows by length first (then shuffles the batches), so short rows are not padded to long ones.
  Without ``batch_size`` it yields rows for ``pad_collate``.
* ``petastorm_loader`` — petastorm's ``make_batch_reader`` with ``cur_shard``/``shard_count`` (also by
  row group); petastorm batches fixed-length columns only, so read ``input_ids``, not ``ids``.

With the native loader the ranks' row counts differ by at most one row, so their step counts by at most
one; petastorm deals whole row groups, which can differ a lot in size: the training loop still copes with
uneven ends (shadow steps, dl/engine/loop.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from etl.core.errors import InputError, MissingInput


@dataclass(frozen=True)
class RowGroup:
    """A row group of a Parquet file, or the slice ``[start, stop)`` of its rows."""
    path: str
    index: int
    rows: int
    start: int = 0
    stop: int | None = None

    def read(self, columns: Sequence[str]) -> pa.Table:
        table = pq.ParquetFile(self.path).read_row_group(self.index, columns=list(columns))
        return table if self.stop is None else table.slice(self.start, self.stop - self.start)


def rank_share(units: Sequence[RowGroup], order: Sequence[int], rank: int, world_size: int,
               position: Callable[[RowGroup, int], int] | None = None) -> list[RowGroup]:
    """This rank's share of ``units`` taken in ``order``: their rows (``unit.rows`` each) laid end to end and
    cut into ``world_size`` runs of equal length, so the ranks' row counts differ by at most one, whatever
    the row groups' sizes (two groups of 10k and 17k rows would otherwise give one rank 60% more steps, which
    the other waits out). A unit across a cut is sliced; ``position(unit, k)`` maps the k-th counted row to
    its row offset (rows counted with a filter); by default they are the same."""
    position = position or (lambda unit, k: unit.start + k)
    total = sum(u.rows for u in units)
    lo, hi = total * rank // world_size, total * (rank + 1) // world_size
    share, seen = [], 0
    for i in order:
        unit = units[i]
        first, last = max(lo - seen, 0), min(hi - seen, unit.rows)
        seen += unit.rows
        if first < last:
            whole = first == 0 and last == unit.rows
            share.append(unit if whole else dataclasses.replace(
                unit, rows=last - first, start=position(unit, first), stop=position(unit, last)))
        if seen >= hi:
            break
    return share


def list_row_groups(root: str | os.PathLike) -> list[RowGroup]:
    """Every row group of every ``*.parquet`` under ``root`` (a file or a directory), in a fixed order."""
    base = Path(root)
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise MissingInput(f"no Parquet files under {root}: run `lakedl etl text` first")
    units = []
    for path in files:
        meta = pq.read_metadata(path)
        units += [RowGroup(str(path), i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return units


def _nonzero(unit: RowGroup, column: str) -> int:
    values = unit.read([column]).column(column)
    return int(pc.sum(pc.not_equal(values, 0)).as_py() or 0)


class ParquetShardDataset(IterableDataset):
    """Rows (dicts of column → value) of the shards this rank and DataLoader worker own this epoch."""

    def __init__(self, root: str | os.PathLike, columns: Sequence[str], rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, buffer_size: int = 10_000, batch_size: int | None = None,
                 ragged: Sequence[str] = ("ids",), pad_id: int = 0, max_len: int | None = None,
                 keep_if: str | None = None, length_buckets: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if length_buckets and not (batch_size and ragged):
            raise ValueError("length_buckets needs batch_size and a ragged column to sort by")
        self.units = list_row_groups(root)
        self.columns = list(columns)
        missing = {*self.columns, *([keep_if] if keep_if else [])} - set(pq.read_schema(self.units[0].path).names)
        if missing:
            raise InputError(f"columns {sorted(missing)} are not in the shards under {root}")
        self.keep_if = keep_if
        if keep_if:  # only rows whose ``keep_if`` column is non-zero (e.g. a task's label mask); counted once
            self.units = [dataclasses.replace(u, rows=_nonzero(u, keep_if)) for u in self.units]
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.buffer_size = shuffle, seed, max(1, buffer_size)
        self.batch_size, self.ragged, self.pad_id, self.max_len = batch_size, tuple(ragged), pad_id, max_len
        self.length_buckets = length_buckets
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (like DistributedSampler.set_epoch): a new permutation per epoch."""
        self.epoch = epoch

    def units_for(self, worker: int = 0, workers: int = 1) -> list[RowGroup]:
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        position = self._kept_position if self.keep_if else None
        return rank_share(self.units, order, self.rank, self.world_size, position)[worker::workers]

    def _kept_position(self, unit: RowGroup, k: int) -> int:
        """Row offset of the k-th row of ``unit`` that ``keep_if`` keeps (its end for k = all of them)."""
        mask = unit.read([self.keep_if]).column(self.keep_if).to_numpy(zero_copy_only=False) != 0
        kept = np.flatnonzero(mask)
        return unit.start + (int(kept[k]) if k < len(kept) else len(mask))

    def _read(self, unit: RowGroup) -> pa.Table:
        columns = self.columns if not self.keep_if or self.keep_if in self.columns else [*self.columns, self.keep_if]
        table = unit.read(columns)
        if self.keep_if:
            table = table.filter(pc.not_equal(table.column(self.keep_if), 0)).select(self.columns)
        return table

    def rows_this_epoch(self) -> int:
        return sum(u.rows for u in self.units_for())

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        if self.batch_size:
            yield from self._batches(self.units_for(worker, workers), rng)
            return
        buffer: list[dict] = []
        for unit in self.units_for(worker, workers):
            table = self._read(unit)
            columns = {name: table.column(name).to_pylist() for name in self.columns}
            for i in range(table.num_rows):
                row = {name: values[i] for name, values in columns.items()}
                if not self.shuffle:
                    yield row
                    continue
                if len(buffer) < self.buffer_size:
                    buffer.append(row)
                    continue
                j = int(rng.integers(len(buffer)))
                buffer[j], row = row, buffer[j]
                yield row
        if self.shuffle:
            rng.shuffle(buffer)
        yield from buffer


    def _batches(self, units: list[RowGroup], rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Fill a buffer with row groups (≥ buffer_size rows), permute it, emit full batches, carry the
        remainder over; the last batch of the epoch may be short."""
        pending: list[pa.Table] = []
        held = 0
        for unit in units:
            table = self._read(unit)
            pending.append(table)
            held += table.num_rows
            if held >= self.buffer_size:
                rest = yield from self._emit(pa.concat_tables(pending), rng, final=False)
                pending, held = [rest], rest.num_rows
        if held:
            yield from self._emit(pa.concat_tables(pending), rng, final=True)

    def _emit(self, table: pa.Table, rng: np.random.Generator, final: bool):
        if self.shuffle:
            table = table.take(pa.array(rng.permutation(table.num_rows)))
        full = table.num_rows - table.num_rows % self.batch_size
        stop = table.num_rows if final else full
        if self.length_buckets:
            for rows in self._bucketed(table, full, rng):
                yield arrow_collate(table.take(pa.array(rows)), self.ragged, self.pad_id, self.max_len)
            if final and full < stop:
                yield arrow_collate(table.slice(full), self.ragged, self.pad_id, self.max_len)
        else:
            for start in range(0, stop, self.batch_size):
                yield arrow_collate(table.slice(start, self.batch_size), self.ragged, self.pad_id, self.max_len)
        return table.slice(full, table.num_rows - full) if not final else table.slice(0, 0)

    def _bucketed(self, table: pa.Table, full: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The first ``full`` rows as batches of similar length (less padding): each run of
        ``length_buckets`` batches' rows is sorted by length and cut into batches, and the batches are
        then put in random order, so a batch of short rows is as likely first as one of long rows."""
        lengths = pc.list_value_length(table.column(self.ragged[0])).to_numpy(zero_copy_only=False)[:full]
        span = self.batch_size * self.length_buckets
        rows = np.concatenate([w + np.argsort(lengths[w:w + span], kind="stable")
                               for w in range(0, full, span)]) if full else np.arange(0)
        batches = [rows[s:s + self.batch_size] for s in range(0, full, self.batch_size)]
        order = rng.permutation(len(batches)) if self.shuffle else range(len(batches))
        return [batches[i] for i in order]


def arrow_collate(table: pa.Table, ragged: Sequence[str] = ("ids",), pad_id: int = 0,
                  max_len: int | None = None) -> dict[str, torch.Tensor]:
    """``pad_collate`` done column-wise on an Arrow batch: ragged lists → ``(B, T)`` padded + lengths,
    fixed-length lists → ``(B, L)``, numeric scalars → ``(B,)``; string columns are left out."""
    out: dict[str, torch.Tensor] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            offsets = col.offsets.to_numpy()
            values = col.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
            lengths = np.diff(offsets)
            if name in ragged:
                width = max(int(lengths.max(initial=0)), 1)
                padded = np.full((len(col), width), pad_id, dtype=np.int64)  # (B, T)
                padded[np.arange(width)[None, :] < lengths[:, None]] = values
                if max_len:
                    padded, lengths = padded[:, :max_len], np.minimum(lengths, max_len)
                out[name] = torch.from_numpy(padded)
                out[f"{name}_lengths"] = torch.from_numpy(lengths.astype(np.int64))
            else:
                out[name] = torch.from_numpy(values.reshape(len(col), -1).astype(np.int64))  # (B, L)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            continue
        else:
            out[name] = torch.from_numpy(col.to_numpy(zero_copy_only=False).copy())  # Arrow memory is read-only
    return out


def pad_collate(rows: Sequence[Mapping], ragged: Sequence[str] = ("ids",), pad_id: int = 0,
                max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Stack a list of rows into tensors. Each ragged column becomes ``(B, T)`` padded with ``pad_id``
    (T = longest in the batch, capped at ``max_len``) plus ``<name>_lengths`` ``(B,)``."""
    out: dict[str, torch.Tensor] = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if name in ragged:
            lengths = [min(len(v), max_len) if max_len else len(v) for v in values]
            width = max(max(lengths), 1)
            batch = torch.full((len(values), width), pad_id, dtype=torch.long)  # (B, T)
            for i, (v, n) in enumerate(zip(values, lengths)):
                if n:
                    batch[i, :n] = torch.as_tensor(v[:n], dtype=torch.long)
            out[name] = batch
            out[f"{name}_lengths"] = torch.as_tensor(lengths, dtype=torch.long)
        elif isinstance(values[0], (list, tuple, np.ndarray)):
            out[name] = torch.as_tensor(np.asarray(values))
        elif isinstance(values[0], str):
            continue  # ids such as review_id stay out of the tensors
        else:
            out[name] = torch.as_tensor(values)
    return out


def petastorm_loader(root: str | os.PathLike, columns: Sequence[str], batch_size: int, rank: int = 0,
                     world_size: int = 1, shuffle: bool = True, seed: int = 0, workers: int = 1,
                     shuffling_queue_capacity: int = 0):
    """petastorm's reader + torch DataLoader over the same shards, one shard of row groups per rank.
    Use as a context manager (it owns reader threads). Columns must be numeric scalars or fixed-length
    lists (petastorm's torch loader rejects strings such as review_id and ragged lists such as ids)."""
    from petastorm import make_batch_reader
    from petastorm.pytorch import BatchedDataLoader

    url = Path(root).absolute().as_uri()
    reader = make_batch_reader(url, schema_fields=list(columns), cur_shard=rank, shard_count=world_size,
                               shuffle_row_groups=shuffle, seed=seed, num_epochs=1, workers_count=workers)
    return BatchedDataLoader(reader, batch_size=batch_size, shuffling_queue_capacity=shuffling_queue_capacity)
