"""A training run's HTML report (``report.html`` in the run directory; ``lakedl report --run DIR``): the run's
facts, test figures, training curves, confusion matrix and per-class precision/recall/F1, the
bias/variance verdict with its advice, and the worst-scored test examples (highest loss: the confident
mistakes) — texts decoded from the shards' token ids, coloured by which tokens drove the prediction
(integrated gradients, dl/models/attribution.py), or image thumbnails; a GAN's samples instead. One self-contained file: the
PNGs are embedded, and also written beside it."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from etl.core.errors import MissingInput

WORST = 12


def _img(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" style="max-width:100%">'


def _table(rows: list[list], head: list[str], raw_last: bool = False) -> str:
    """An HTML table of escaped cells (``raw_last``: each row's last cell is HTML already)."""
    def cell(c, raw: bool) -> str:
        return f"<td>{c if raw else html.escape(str(c))}</td>"

    cells = "".join("<tr>" + "".join(cell(c, raw_last and j == len(r) - 1) for j, c in enumerate(r)) + "</tr>"
                    for r in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + cells + "</table>"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def worst_texts(model, shards: Path, task: str, k: int = WORST, limit: int = 20_000) -> list[dict]:
    """The ``k`` test texts (of the first ``limit`` with a ``task`` label) the model gives the lowest
    probability of their true class."""
    import pyarrow.dataset as ds

    from dl.data.loaders import arrow_collate
    from dl.data.text import MASK, shard_tokenizer

    tokenizer = shard_tokenizer(shards)
    vocab = tokenizer.vocabulary()
    data = ds.dataset(shards / "test", format="parquet")
    has_id = "review_id" in data.schema.names  # the text ETL's shards; hand-made ones may lack it
    table = data.to_table(columns=[*(["review_id"] if has_id else []), "ids", task, MASK[task]])
    table = table.filter(ds.field(MASK[task]) != 0).slice(0, limit)
    ids, gold = table.column("ids").to_pylist(), table.column(task).to_numpy()
    names = table.column("review_id").to_pylist() if has_id else [f"row {i}" for i in range(len(ids))]
    p_gold, pred = np.zeros(len(ids)), np.zeros(len(ids), dtype=int)
    with torch.no_grad():
        for start in range(0, len(ids), 256):
            batch = arrow_collate(table.select(["ids"]).slice(start, 256), pad_id=tokenizer.pad_id)  # as evaluation
            probs = torch.softmax(model(batch["ids"], batch["ids_lengths"])[task].float(), -1).numpy()
            rows = np.arange(len(probs))
            p_gold[start:start + len(probs)] = probs[rows, gold[start:start + len(probs)]]
            pred[start:start + len(probs)] = probs.argmax(1)
    from dl.models.attribution import integrated_gradients, special_mask

    special = special_mask(vocab)
    out = []
    for i in np.argsort(p_gold)[:k]:
        words = [vocab[t] for t in ids[i] if 0 <= t < len(vocab)]
        text = " ".join(words).replace(" ##", "") if tokenizer.kind != "word" else " ".join(words)
        row = {"id": names[i], "text": text, "gold": int(gold[i]), "predicted": int(pred[i]),
               "p_gold": float(p_gold[i])}
        if words and len(words) == len(ids[i]):  # which tokens drove the wrong prediction (toward it: positive)
            a = integrated_gradients(model, torch.tensor(ids[i]), tokenizer.pad_id, special, head=task,
                                     target=int(pred[i]), steps=32, tolerance=0.05, max_steps=128)
            row.update(tokens=words, attributions=a.values)
        out.append(row)
    return out


def worst_images(model, shards: Path, augment: dict, k: int = WORST, limit: int = 20_000):
    """The ``k`` test images (of the first ``limit``) with the lowest probability of their true class:
    their pixels and labels."""
    from dl.data.image_loader import Augment, image_loader

    aug = Augment(**augment)
    kept: list[tuple[float, np.ndarray, int, int]] = []
    seen = 0
    with torch.no_grad(), image_loader((shards / "test").absolute().as_uri(), 256, aug=aug, workers=1) as loader:
        for batch in loader:
            probs = torch.softmax(model(batch["image"]), -1)
            labels = batch["label"].long()
            p = probs[torch.arange(len(labels)), labels]
            for j in torch.argsort(p)[:k].tolist():
                kept.append((float(p[j]), batch["image"][j].numpy(), int(labels[j]), int(probs[j].argmax())))
            kept = sorted(kept, key=lambda r: r[0])[:k]
            seen += len(labels)
            if seen >= limit:
                break
    return kept, aug


def _thumbnails(kept, aug, classes: list[str], path: Path) -> Path:
    from dl.train.plots import _pyplot, _save

    plt = _pyplot()
    cols = min(6, len(kept))
    rows = (len(kept) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (p, image, gold, pred) in zip(axes.flat, kept, strict=False):
        pixels = image * aug.std + aug.mean
        ax.imshow(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{classes[gold]} → {classes[pred]}\np(true)={p:.2f}", fontsize=8)
    return _save(plt, fig, path)


def write_report(run_dir: str | Path) -> Path:
    """``report.html`` for a finished run directory (result.json, history.json, best.pt/last.pt, config.yml)."""
    from dl.train.plots import confusion_matrix, training_curves
    from dl.train.rundir import load_weights
    from etl.core.config import read_yaml

    run_dir = Path(run_dir)
    if not (run_dir / "result.json").is_file():
        raise MissingInput(f"{run_dir}: no result.json; point --run at a finished `lakedl train` run")
    result = json.loads((run_dir / "result.json").read_text())
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    cfg = read_yaml(run_dir / "config.yml")
    model, state, _ = load_weights(run_dir)
    name, task = state["config"]["model"], cfg["train"]["task"]
    first = "sentiment" if task == "multitask" else task
    shards = Path(cfg["data"]["shards"])
    parts = [f"<h1>{html.escape(result['run'])}</h1>",
             _table([["model", name], ["task", task], ["processes", result["processes"]],
                     ["launcher", result["launcher"]], ["epochs run", result["epochs_run"]],
                     ["best epoch (dev)", (result.get("best_epoch") or 0) + 1], ["wall time (s)", result["seconds"]],
                     ["data", shards], ["MLflow run", result["mlflow_run_id"]]], ["", ""])]
    test = result.get("test") or {}
    scalars = [[k, _fmt(v)] for k, v in test.items() if isinstance(v, (int, float))]
    if scalars:
        parts += ["<h2>Test figures</h2>", _table(scalars, ["metric", "value"])]
    if history:
        parts += ["<h2>Training curves</h2>", _img(training_curves(history, run_dir / "curves.png", title=result["run"]))]
    labels = (state.get("label_map") or {}).get("class" if task in ("class", "generate") else first)
    if f"{first}_confusion" in test:
        matrix = test[f"{first}_confusion"]
        labels = labels or [str(i) for i in range(len(matrix))]
        png = confusion_matrix(matrix, labels, run_dir / "confusion.png",
                               title=f"{result['run']}: test accuracy {test[f'{first}_accuracy']:.4f}")
        per_class = test.get(f"{first}_per_class", {})
        rows = [[labels[int(c)], _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), v["support"]]
                for c, v in per_class.items()]
        parts += ["<h2>Confusion matrix and per-class figures (test)</h2>", _img(png),
                  _table(rows, ["class", "precision", "recall", "F1", "support"])]
    diagnosis = result.get("diagnosis")
    if diagnosis:
        chosen = next((h for h in history if h["epoch"] == result.get("best_epoch")), {})
        errors = [[f"{split} error", _fmt(1 - chosen[f"{split}_{first}_accuracy"])] for split in ("train", "dev")
                  if f"{split}_{first}_accuracy" in chosen]
        verdict = f"<p><b>{html.escape(diagnosis['verdict'])}</b> — {html.escape(diagnosis['advice'])}</p>"
        parts += ["<h2>Bias / variance</h2>", verdict, _table(errors, ["", "at the selected epoch"])]
    if first in ("sentiment", "rating") and (shards / "test").is_dir():
        from dl.models.attribution import heat_spans

        worst = worst_texts(model, shards, first)
        rows = [[w["id"], labels[w["gold"]] if labels else w["gold"], labels[w["predicted"]] if labels else w["predicted"],
                 f"{w['p_gold']:.3f}",
                 heat_spans(w["tokens"], w["attributions"]) if "tokens" in w else html.escape(w["text"][:300])]
                for w in worst]
        table = _table(rows, ["id", "true", "predicted", "p(true)", "text"], raw_last=True)
        parts += ["<h2>Worst-scored test examples</h2>",
                  "<p>Each text's tokens coloured by integrated gradients toward the <b>predicted</b> label: "
                  "green pushed toward it, red against it (hover for the value; docs/scoring.md).</p>", table]
    elif task == "class" and (shards / "test").is_dir():
        kept, aug = worst_images(model, shards, cfg["data"]["augment"])
        parts += ["<h2>Worst-scored test images</h2>",
                  _img(_thumbnails(kept, aug, labels or [str(i) for i in range(100)], run_dir / "worst.png"))]
    elif task == "generate":
        from dl.data.images import sample_grid

        rows = "one row per class, in the order " + ", ".join(labels) if model.cfg.conditional and labels else "8 a row"
        parts += ["<h2>Samples</h2>", f"<p>From the selected weights ({html.escape(rows)}; `lakedl sample` draws "
                  "more).</p>", _img(sample_grid(model, run_dir / "samples.png"))]
        grids = sorted((run_dir / "samples").glob("epoch_*.png"))
        shown = list(dict.fromkeys([grids[0], grids[len(grids) // 2], grids[-1]])) if grids else []
        if shown:
            cells = "".join(f"<td>after epoch {int(g.stem.split('_')[1])}<br>{_img(g)}</td>" for g in shown)
            parts += ["<h2>Samples during training</h2>", f"<table><tr>{cells}</tr></table>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}")
    out = run_dir / "report.html"
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(result['run'])}</title>"
                   f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return out
