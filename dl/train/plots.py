"""Plots written next to a run's checkpoint and logged to MLflow (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def training_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Loss per epoch (left) and every train_/dev_ metric per epoch (right, train dashed, dev solid)."""
    if not history:
        raise ValueError("no epochs in the history: nothing to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    names = sorted({k.split("_", 1)[1] for h in history for k in h if k.startswith(("dev_", "train_"))})
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        for split, style in (("train", "--"), ("dev", "-")):
            key = f"{split}_{name}"
            if key in history[0]:
                ax_metric.plot(epochs, [h[key] for h in history], style, color=color, marker=".",
                               label=f"{split} {name}")
    ax_metric.set(xlabel="epoch", title="metrics (train dashed, dev solid)")
    ax_metric.grid(alpha=0.3)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def confusion_matrix(matrix, labels: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Counts heatmap, rows = true class, columns = predicted, each cell annotated with count and row %."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    return _save(plt, fig, path)
