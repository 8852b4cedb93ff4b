"""An LSTM-Vis-style view of a trained recurrent checkpoint: the hidden state of selected units over
the tokens of a few sentences, as a PNG heatmap (``lakedl viz lstm --run RUN_DIR``).

The units shown are the ones the sentiment head leans on most: the largest positive and negative
``w_positive - w_negative`` weights of the head over the pooled states, so red rows are units whose
activation pushes towards "positive", blue-labelled rows towards "negative"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from etl.core.errors import LakedlError


class VizError(LakedlError, ValueError):
    """The run cannot be shown; the message says why."""


def _rows(shards: Path, split: str, sentences: int, min_len: int, max_len: int) -> list[dict]:
    """Labelled rows of ``split`` whose length is in [min_len, max_len], half negative and half positive
    (files in name order: the same rows every time)."""
    wanted = {0: sentences // 2, 1: sentences - sentences // 2}
    picked: list[dict] = []
    for path in sorted((shards / split).glob("*.parquet")):
        table = pq.read_table(path)
        if "review_id" not in table.column_names:  # shards not written by the text ETL: name rows by position
            table = table.append_column("review_id", pa.array([f"{path.name}#{i}" for i in range(table.num_rows)]))
        for row in table.select(["review_id", "ids", "sentiment", "sentiment_mask"]).to_pylist():
            if row["sentiment_mask"] and min_len <= len(row["ids"]) <= max_len and wanted[row["sentiment"]] > 0:
                wanted[row["sentiment"]] -= 1
                picked.append(row)
                if len(picked) == sentences:
                    return picked
    if not picked:
        raise VizError(f"{shards / split}: no sentiment-labelled rows of {min_len}..{max_len} tokens")
    return picked


def lstm_heatmap(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, split: str = "test",
                 sentences: int = 4, units: int = 16, min_len: int = 6, max_len: int = 18,
                 shards: str | os.PathLike | None = None) -> dict:
    """Write the heatmap PNG (default ``<run_dir>/lstm_vis.png``); returns what it shows."""
    from dl.data.text import LABEL_MAP
    from dl.train.plots import _pyplot, _save
    from dl.train.rundir import load_run

    model, state, shards, tokenizer = load_run(run_dir, "rnn", shards, purpose="the hidden-state view")
    config = state["config"]
    run_dir = Path(run_dir)
    vocab = tokenizer.vocabulary()
    rows = _rows(shards, split, sentences, min_len, max_len)

    head = model.heads.heads["sentiment"].weight.detach()  # (2, D*H)
    lean = head[1] - head[0]
    order = torch.argsort(lean, descending=True)
    half = max(1, units // 2)
    chosen = torch.cat([order[:half], order[-half:]]).tolist()  # most positive, then most negative
    names = [f"{'fwd' if u < config['hidden'] else 'bwd'} {u % config['hidden']} ({'+' if lean[u] > 0 else '-'})"
             for u in chosen]

    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(8, 0.55 * max_len + 3), 0.26 * len(chosen) * len(rows) + 1.2),
                             squeeze=False, layout="constrained")
    shown = []
    for ax, row in zip(axes[:, 0], rows):
        ids = torch.tensor([row["ids"]], dtype=torch.long)
        lengths = torch.tensor([len(row["ids"])])
        with torch.no_grad():
            seq = model.states(ids, lengths)[0]  # (T, D*H)
            p_pos = torch.softmax(model(ids, lengths)["sentiment"][0], -1)[1].item()
        tokens = [vocab[i] if i < len(vocab) else "?" for i in row["ids"]]
        values = seq[:, chosen].T.numpy()  # (units, T)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(tokens)), tokens, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(chosen)), names, fontsize=6)
        truth = LABEL_MAP["sentiment"][row["sentiment"]]
        ax.set_title(f"{row['review_id']}: true {truth}, P(positive) = {p_pos:.2f}", fontsize=9)
        shown.append({"review_id": row["review_id"], "tokens": tokens, "label": truth, "p_positive": round(p_pos, 4)})
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02, label="hidden state")
    path = Path(out) if out else run_dir / "lstm_vis.png"
    _save(plt, fig, path, tight=False)
    summary = {"png": str(path), "run": str(run_dir), "units": chosen, "unit_names": names, "sentences": shown}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary
