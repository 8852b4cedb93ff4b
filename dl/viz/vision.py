"""Pictures of image models: the first convolution's kernels as a grid (the "Gabor-like" filters a trained
network learns), its feature maps for one image, which pixels drove each prediction (integrated gradients), and
an autoencoder's reconstructions beside the inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from etl.core.errors import InputError


def _grid(tiles: list[np.ndarray], out: str | Path, title: str, cols: int, cmap: str = "gray",
          styles: list[dict] | None = None) -> Path:
    from dl.train.plots import _pyplot, _save

    plt = _pyplot()
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, tile) in enumerate(zip(axes.flat, tiles, strict=False)):
        style = styles[i] if styles else {"cmap": cmap if tile.ndim == 2 else None}  # per tile: imshow's options
        ax.imshow(tile, interpolation="nearest", **style)
    fig.suptitle(title, fontsize=9)
    return _save(plt, fig, out)


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The model's first 2-D convolution."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module
    raise InputError(f"{type(model).__name__} has no Conv2d layer")


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


def pixel_attributions(model: torch.nn.Module, images: torch.Tensor, baseline_value: float, steps: int = 64,
                       tolerance: float = 0.02, max_steps: int = 1024):
    """Integrated gradients (Captum) of each image's predicted class log-odds to its pixels, from a black image
    (``baseline_value``: black after the run's normalisation). Returns the ``(n, C, H, W)`` attributions, the
    predicted classes and each image's completeness error relative to what it explains (the integral's points
    double from ``steps`` until every image's error is within ``tolerance``: dl.models.attribution.converged)."""
    from captum.attr import IntegratedGradients

    model = model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)

    from dl.models.attribution import converged, log_odds

    def target_log_odds(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return log_odds(model(x).float(), target)

    baseline = torch.full_like(images, baseline_value)
    with torch.no_grad():
        explained = target_log_odds(images, predicted) - target_log_odds(baseline, predicted)
    ig = IntegratedGradients(target_log_odds)
    attr, delta = converged(lambda n: ig.attribute(images, baselines=baseline, n_steps=n,
                                                   additional_forward_args=(predicted,), internal_batch_size=256,
                                                   return_convergence_delta=True),
                            explained, steps, tolerance, max_steps)
    return attr.detach(), predicted, (delta.abs() / explained.abs().clamp(min=1e-6)).tolist()


def attribution_grid(model: torch.nn.Module, images: torch.Tensor, baseline_value: float, classes: list[str],
                     out: str | Path, title: str = "integrated gradients") -> tuple[Path, list[float]]:
    """Pairs of tiles: each image, then its pixel attributions toward the predicted class (red toward, blue
    against, one symmetric scale per image). Returns the PNG and each image's relative completeness error."""
    attr, predicted, errors = pixel_attributions(model, images, baseline_value)
    tiles, styles = [], []
    for image, a in zip(images, attr, strict=True):
        grey = image.shape[0] == 1
        tiles.append(image[0].numpy() if grey else image.permute(1, 2, 0).numpy())
        styles.append({"cmap": "gray"} if grey else {})
        heat = a.sum(0).numpy()
        tiles.append(heat / (float(np.abs(heat).max()) or 1.0))
        styles.append({"cmap": "bwr", "vmin": -1.0, "vmax": 1.0})
    names = ", ".join(classes[int(p)] if int(p) < len(classes) else str(int(p)) for p in predicted[:8])
    path = _grid(tiles, out, f"{title} (predicted: {names}{', …' if len(predicted) > 8 else ''})", cols=8,
                 styles=styles)
    return path, errors


def first_images(shards: str | Path, split: str, n: int, mean: float = 0.0, std: float = 1.0):
    """The first ``n`` images of a split (row-group order) as normalised ``(n, C, H, W)`` floats, and labels."""
    from dl.data.image_loader import Augment, image_loader

    xs, ys = [], []
    with image_loader((Path(shards) / split).absolute().as_uri(), min(n, 500), aug=Augment(mean=mean, std=std),
                      workers=1) as loader:
        for batch in loader:
            xs.append(batch["image"])
            ys.append(batch["label"])
            if sum(len(x) for x in xs) >= n:
                break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def run_pictures(run_dir: str | Path, out: str | Path | None = None, split: str = "test", n: int = 16) -> dict:
    """The pictures of a finished image run (``best.pt``, else ``last.pt``) in ``out`` (default the run
    directory): ``kernels.png``; for classifiers ``feature_maps.png`` of the split's first image and
    ``confusion.png`` from the run's test figures; for the autoencoder ``reconstructions.png`` of ``n``
    images (noised first when the run was a denoising one); for a GAN ``samples.png`` (its discriminator's
    kernels in ``kernels.png``). Returns the paths written."""
    import json

    from dl.models.vision import IMAGE_MODELS
    from dl.train.rundir import load_weights
    from etl.core.config import read_yaml

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir
    model, state, weights = load_weights(run_dir)
    name = state["config"]["model"]
    if name not in IMAGE_MODELS:
        raise InputError(f"{weights} holds a {name!r} model; these pictures are for image models "
                         f"({', '.join(IMAGE_MODELS)})")
    data = read_yaml(run_dir / "config.yml")["data"]
    images, _ = first_images(data["shards"], split, n, data["augment"]["mean"], data["augment"]["std"])
    out.mkdir(parents=True, exist_ok=True)
    written = {"kernels": kernel_grid(model, out / "kernels.png", title=f"{run_dir.name}: first-layer kernels")}
    if name == "dcgan":  # its first convolution is the discriminator's; what it makes is a grid of samples
        from dl.data.images import sample_grid

        written["samples"] = sample_grid(model, out / "samples.png", n=max(n, 8))
        return {k: str(v) for k, v in written.items()}
    if name == "autoencoder":
        noisy = None
        if model.cfg.noise_std > 0:
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
            noisy = (images + model.cfg.noise_std * noise).clamp(0, 1)
        with torch.no_grad():
            written["reconstructions"] = reconstruction_grid(model, images, out / "reconstructions.png", noisy=noisy)
        return {k: str(v) for k, v in written.items()}
    with torch.no_grad():
        written["feature_maps"] = feature_maps(model, images[0], out / "feature_maps.png",
                                               title=f"{run_dir.name}: first-layer feature maps")
    classes = state.get("label_map", {}).get("class") or []
    mean, std = data["augment"]["mean"], data["augment"]["std"]
    written["attributions"], _ = attribution_grid(model, images[:8], (0.0 - mean) / std, classes,
                                                  out / "attributions.png",
                                                  title=f"{run_dir.name}: integrated gradients")
    result = run_dir / "result.json"
    test = json.loads(result.read_text()).get("test") if result.is_file() else None
    if test and "class_confusion" in test:
        from dl.train.plots import confusion_matrix

        classes = state.get("label_map", {}).get("class") or [str(i) for i in range(len(test["class_confusion"]))]
        written["confusion"] = confusion_matrix(test["class_confusion"], classes, out / "confusion.png",
                                                title=f"{run_dir.name}: test accuracy {test['class_accuracy']:.4f}")
    return {k: str(v) for k, v in written.items()}
