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


COUNTERS = {"draws"}  # history figures that count, not measure (a GAN's noise draws)


def training_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Loss per epoch (left: each part's when a model trains in parts, a GAN's discriminator and generator) and
    every train_/dev_ metric per epoch (right, train dashed, dev solid; metrics beyond [0, 1.5] beside shares and
    accuracies, e.g. a GAN's FID, on their own axis at the right; counters left out)."""
    if not history:
        raise ValueError("no epochs in the history: nothing to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    parts = [k for k in history[0] if k.startswith("loss_")]
    for key in parts or ["loss"]:
        ax_loss.plot(epochs, [h[key] for h in history], marker="o",
                     label=key.removeprefix("loss_") if parts else "train loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    if parts:
        ax_loss.legend(fontsize=8)
    names = sorted({k.split("_", 1)[1] for h in history for k in h if k.startswith(("dev_", "train_"))} - COUNTERS)
    large = {n for n in names if max(abs(h.get(f"{s}_{n}", 0) or 0) for h in history for s in ("dev", "train")) > 1.5}
    ax_right = ax_metric.twinx() if large and large != set(names) else None
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        ax = ax_right if ax_right is not None and name in large else ax_metric
        for split, style in (("train", "--"), ("dev", "-")):
            key = f"{split}_{name}"
            if key in history[0]:
                ax.plot(epochs, [h[key] for h in history], style, color=color, marker=".",
                        label=f"{split} {name}" + (" (right axis)" if ax is ax_right else ""))
    ax_metric.set(xlabel="epoch", title="metrics (train dashed, dev solid)")
    ax_metric.grid(alpha=0.3)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [h for ax in (ax_metric, ax_right) if ax is not None for h in ax.get_legend_handles_labels()[0]]
    ax_metric.legend(handles=handles, fontsize=7)
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
