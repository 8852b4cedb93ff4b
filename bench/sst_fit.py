"""How well SST quality runs fit their own training data, by text length: the best checkpoint of each
run scored on a sample of train phrases, on every train sentence and on every dev sentence, overall and
in length buckets. A model that classifies most phrases but fewer of its own training sentences is
underfitting whole sentences (more capacity or training may help); one that fits its training sentences
but not dev ones is overfitting (regularise). Run after ``bench/quality_sst.py`` has trained the rows.

    python bench/sst_fit.py [--runs textcnn_edges_sst2 bilstm_glove_cos_sst2 ...]   (make sst-fit)

Writes bench/results/sst_fit.json and bench/results/sst_fit.png (accuracy by length, one panel per split).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from common import command_line, write_result  # bench/common.py, beside this script

from dl.data.loaders import arrow_collate
from dl.train.plots import _pyplot, _save
from dl.train.rundir import RunError, load_run

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "data" / "work" / "quality_sst"
BUCKETS = [(1, 10), (10, 20), (20, 30), (30, 10_000)]  # token counts [lo, hi)
PHRASE_SAMPLE = 8000


def read_split(shards: Path, split: str) -> pa.Table:
    """The split's rows that carry a binary sentiment label (SST-2: neutral rows are masked out)."""
    files = sorted((shards / split).glob("*.parquet"))
    if not files:
        sys.exit(f"no Parquet shards under {shards / split}: run bench/quality_sst.py first (it writes them)")
    table = pa.concat_tables(pq.read_table(f, columns=["review_id", "ids", "length", "sentiment", "sentiment_mask"])
                             for f in files)
    return table.filter(pc.not_equal(table.column("sentiment_mask"), 0))


def correct(model: torch.nn.Module, table: pa.Table, batch: int = 256) -> np.ndarray:
    """Per row: does the model's sentiment argmax equal the label."""
    hits = []
    with torch.no_grad():
        for start in range(0, table.num_rows, batch):
            b = arrow_collate(table.slice(start, batch).select(["ids", "sentiment"]))
            hits.append((model(b["ids"], b["ids_lengths"])["sentiment"].argmax(1) == b["sentiment"]).numpy())
    return np.concatenate(hits) if hits else np.zeros(0, bool)


def fit(run: str, shards: Path, splits: dict[str, pa.Table]) -> dict:
    run_dir = WORK / "runs" / "train" / run
    try:  # best.pt (else last.pt), refused if it was trained on another vocabulary than these shards
        model, state, _, _ = load_run(run_dir, None, shards, purpose="scoring it on these shards")
    except RunError as exc:
        sys.exit(f"{exc} (train it with `make quality QUALITY_ROWS={run}`; the runs under {run_dir.parent} can be fitted)")
    row = {"case": run, "model": state["config"]["model"], "task": "sst2", "run": str(run_dir.relative_to(REPO))}
    for name, table in splits.items():
        hits = correct(model, table)
        lengths = table.column("length").to_numpy()
        row[f"{name}_accuracy"] = round(float(hits.mean()), 4)
        row[f"{name}_rows"] = len(hits)
        row[f"{name}_accuracy_by_length"] = {}
        for lo, hi in BUCKETS:
            inside = (lengths >= lo) & (lengths < hi)
            if inside.any():
                row[f"{name}_accuracy_by_length"][f"{lo}-{hi - 1}" if hi < 10_000 else f"{lo}+"] = \
                    round(float(hits[inside].mean()), 4)
    return row


def plot(rows: list[dict], path: Path) -> Path:
    plt = _pyplot()
    names = ["train_sentences", "dev"]
    fig, axes = plt.subplots(1, len(names), figsize=(11, 4), sharey=True)
    for ax, name in zip(axes, names, strict=True):
        for row in rows:
            by_len = row[f"{name}_accuracy_by_length"]
            ax.plot(list(by_len), list(by_len.values()), marker="o", label=f"{row['case']} ({row[f'{name}_accuracy']:.3f})")
        ax.set_title(f"{name.replace('_', ' ')}: accuracy by length (tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=7)
    return _save(plt, fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=["bilstm_glove_cos_sst2_seed1", "textcnn_edges_sst2",
                                                   "transformer_max_slowemb_sst2", "transformer_long_sst2"])
    ap.add_argument("--shards", default=str(WORK / "shards" / "sst_phrases"))
    args = ap.parse_args(argv)
    shards = Path(args.shards)
    train = read_split(shards, "train")
    is_phrase = pc.match_substring(train.column("review_id"), "-p")  # sst-train-N-pJ: a subtree of sentence N
    phrases = train.filter(is_phrase)
    pick = np.sort(np.random.default_rng(0).choice(phrases.num_rows, min(PHRASE_SAMPLE, phrases.num_rows), replace=False))
    splits = {"train_phrases": phrases.take(pa.array(pick)), "train_sentences": train.filter(pc.invert(is_phrase)),
              "dev": read_split(shards, "dev")}
    rows = []
    for run in args.runs:
        rows.append(fit(run, shards, splits))
        r = rows[-1]
        print(f"{run}: train phrases {r['train_phrases_accuracy']:.3f}, train sentences "
              f"{r['train_sentences_accuracy']:.3f}, dev {r['dev_accuracy']:.3f}", flush=True)
    png = plot(rows, REPO / "bench" / "results" / "sst_fit.png")
    print(f"wrote {write_result('sst_fit', command_line(), rows)} and {png}")


if __name__ == "__main__":
    main()
