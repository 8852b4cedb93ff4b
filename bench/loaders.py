"""Loader throughput over the text ETL's shards: the native pyarrow loader and petastorm vs a bare
pyarrow row-group loop over the same shards, same columns, in one session.

    python bench/loaders.py [--shards data/shards/reviews/train] [--epochs 3] [--repeats 3]   (make bench-loaders)

bare:      for each row group: read_row_group(columns) and walk its rows as Python values
native:    DataLoader(ParquetShardDataset(shuffle, 10k buffer, batch_size), batch_size=None): batches
           shuffled and padded column-wise from Arrow → tensors
native_row_mode: the same dataset yielding rows, DataLoader(batch_size, collate_fn=pad_collate)
petastorm: make_batch_reader + BatchedDataLoader over the same row groups (fixed-length input_ids,
           since petastorm cannot batch the ragged ids) → tensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq
from common import command_line, median_time, write_result  # bench/common.py, beside this script
from torch.utils.data import DataLoader

from dl.data.loaders import ParquetShardDataset, list_row_groups, pad_collate, petastorm_loader

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["ids", "length", "sentiment", "sentiment_mask"]
FIXED = ["input_ids", "length", "sentiment", "sentiment_mask"]


def bare(units, epochs: int) -> int:
    rows = 0
    for _ in range(epochs):
        for unit in units:
            table = pq.ParquetFile(unit.path).read_row_group(unit.index, columns=COLUMNS)
            columns = [table.column(c).to_pylist() for c in COLUMNS]
            for row in zip(*columns):
                rows += 1 if row else 0
    return rows


def native(shards: str, epochs: int, batch: int) -> int:
    ds = ParquetShardDataset(shards, COLUMNS, shuffle=True, seed=0, buffer_size=10_000, batch_size=batch)
    rows = 0
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for b in DataLoader(ds, batch_size=None):
            rows += b["ids"].shape[0]
    return rows


def native_rows(shards: str, epochs: int, batch: int) -> int:
    ds = ParquetShardDataset(shards, COLUMNS, shuffle=True, seed=0, buffer_size=10_000)
    rows = 0
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for b in DataLoader(ds, batch_size=batch, collate_fn=pad_collate):
            rows += b["ids"].shape[0]
    return rows


def petastorm(shards: str, epochs: int, batch: int) -> int:
    rows = 0
    for epoch in range(epochs):
        with petastorm_loader(shards, FIXED, batch_size=batch, seed=epoch, workers=1) as loader:
            for b in loader:
                rows += b["input_ids"].shape[0]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default=str(REPO / "data" / "shards" / "reviews" / "train"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    units = list_row_groups(args.shards)
    total = sum(u.rows for u in units) * args.epochs
    counts = {}

    def timed(name, fn):
        def run():
            counts[name] = fn()
        return median_time(run, args.repeats)

    base_s = timed("bare", lambda: bare(units, args.epochs))
    results = []
    for name, fn in (("native", lambda: native(args.shards, args.epochs, args.batch_size)),
                     ("native_row_mode", lambda: native_rows(args.shards, args.epochs, args.batch_size)),
                     ("petastorm", lambda: petastorm(args.shards, args.epochs, args.batch_size))):
        seconds = timed(name, fn)
        if counts[name] != total or counts["bare"] != total:
            raise SystemExit(f"{name} read {counts[name]} rows, bare {counts['bare']}, expected {total}")
        results.append({"case": f"{name}_vs_bare_pyarrow", "ratio": round(base_s / seconds, 3),
                        "baseline": "bare pyarrow row-group loop over the same shards and columns, Python values",
                        "rows": total, "rows_per_s": round(total / seconds), "baseline_rows_per_s": round(total / base_s),
                        "batch_size": args.batch_size, "row_groups": len(units)})
        print(json.dumps(results[-1]), flush=True)
    print(f"wrote {write_result('loaders', command_line(), results)}")


if __name__ == "__main__":
    main()
