"""Pictures of image models: the first convolution's kernels as a grid (the "Gabor-like" filters a trained
network learns), its feature maps for one image, and an autoencoder's reconstructions beside the inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _grid(tiles: list[np.ndarray], out: str | Path, title: str, cols: int, cmap: str = "gray") -> Path:
    from dl.plots import _pyplot, _save

    plt = _pyplot()
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, tile in zip(axes.flat, tiles, strict=False):
        ax.imshow(tile, cmap=cmap if tile.ndim == 2 else None, interpolation="nearest")
    fig.suptitle(title, fontsize=9)
    return _save(plt, fig, out)


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The model's first 2-D convolution."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def kernel_grid(model: torch.nn.Module, out: str | Path, title: str = "first-layer kernels") -> Path:
    """Every output channel's kernel of the first convolution, each scaled to its own min..max (colour
    kernels as RGB, grey ones per input channel)."""
    w = first_conv(model).weight.detach().cpu().numpy()  # (out, in, k, k)
    tiles = []
    for kernel in w:
        k = kernel.transpose(1, 2, 0) if kernel.shape[0] == 3 else kernel[0]
        span = k.max() - k.min()
        tiles.append((k - k.min()) / (span if span > 0 else 1))
    return _grid(tiles, out, title, cols=min(8, len(tiles)))


@torch.no_grad()
def feature_maps(model: torch.nn.Module, image: torch.Tensor, out: str | Path, title: str = "feature maps") -> Path:
    """The first layer's activation maps (``model.features``) for one ``(C, H, W)`` image, input first."""
    was = model.training
    model.eval()
    maps = model.features(image[None])[0].cpu().numpy()
    model.train(was)
    shown = image.cpu().numpy()
    tiles = [shown[0] if shown.shape[0] == 1 else shown.transpose(1, 2, 0)] + list(maps)
    return _grid(tiles, out, title, cols=min(8, len(tiles)), cmap="viridis")


@torch.no_grad()
def reconstruction_grid(model: torch.nn.Module, images: torch.Tensor, out: str | Path,
                        noisy: torch.Tensor | None = None) -> Path:
    """Rows of inputs (the noisy ones when given), reconstructions and, for a denoising run, the clean
    originals; the title gives the reconstruction MSE."""
    was = model.training
    model.eval()
    given = noisy if noisy is not None else images
    recon = model(given)
    model.train(was)
    mse = torch.nn.functional.mse_loss(recon, images).item()
    rows = [given, recon] + ([images] if noisy is not None else [])
    tiles = [(t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)).cpu().numpy() for row in rows for t in row]
    label = "noisy input / reconstruction / clean" if noisy is not None else "input / reconstruction"
    return _grid(tiles, out, f"{label} — MSE {mse:.4f}", cols=len(images))
