"""``lakedl viz lstm|images``: pictures of trained models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def viz_lstm(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory of a model.name=rnn run")],
             out: Annotated[Optional[Path], typer.Option(help="PNG path (default <run>/lstm_vis.png)")] = None,
             split: Annotated[str, typer.Option(help="shard split to take sentences from")] = "test",
             sentences: Annotated[int, typer.Option(min=1, help="sentences, half negative, half positive")] = 4,
             units: Annotated[int, typer.Option(min=2, help="hidden units to show")] = 16,
             shards: Annotated[Optional[Path], typer.Option(help="default: the run's data.shards")] = None) -> None:
    """LSTM-Vis-style heatmap: the hidden state of the units the sentiment head leans on, token by token."""
    from dl.viz.lstm import lstm_heatmap

    summary = lstm_heatmap(run, out, split=split, sentences=sentences, units=units, shards=shards)
    for s in summary["sentences"]:
        typer.echo(f"  {s['label']:8s} P(positive)={s['p_positive']:.2f}  {' '.join(s['tokens'])}")
    typer.echo(f"wrote {summary['png']} ({len(summary['units'])} units; names and values in "
               f"{Path(summary['png']).with_suffix('.json')})")


def viz_images(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory of an image model")],
               out: Annotated[Optional[Path], typer.Option(help="directory for the PNGs (default: the run's)")] = None,
               split: Annotated[str, typer.Option(help="split the pictured images come from")] = "test",
               n: Annotated[int, typer.Option(min=1, help="images in the autoencoder's reconstruction grid")] = 16) -> None:
    """First-layer kernels, feature maps and the confusion matrix of an image classifier run, or an
    autoencoder's reconstructions (of noised inputs for a denoising run)."""
    from dl.viz.vision import run_pictures

    written = run_pictures(run, out, split=split, n=n)
    for kind, path in written.items():
        typer.echo(f"{kind:<16}{path}")
