"""Image model families on real Fashion-MNIST images: output shapes, each classifier overfits a small
batch, the autoencoder learns to reconstruct (denoising only adds noise in training), and a model rebuilt
from its stored config gives identical outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dl.models.vision import IMAGE_MODELS, build_image_model, rebuild_image_model
from etl.images.pipeline import idx_array

SMALL = {"lenet5": {}, "alexnet_small": {"width": 8, "hidden": 64, "dropout": 0.0},
         "resnet_small": {"widths": [8, 16, 32], "blocks": 1}}


@pytest.fixture(scope="module")
def batch(raw_data):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add synchronisation
    x = idx_array(raw_data / "fashion_mnist" / "train-images-idx3-ubyte.gz")[:32]
    y = idx_array(raw_data / "fashion_mnist" / "train-labels-idx1-ubyte.gz")[:32]
    yield torch.from_numpy(x.astype(np.float32) / 255.0)[:, None], torch.from_numpy(y.astype(np.int64))
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_classifier_shapes_and_overfits_a_batch(name, batch):
    torch.manual_seed(0)
    x, y = batch
    model = build_image_model(name, SMALL[name])
    assert model(x).shape == (32, 10) and model.features(x).dim() == 4
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() >= 0.97


def test_autoencoder_reconstructs_and_denoises_only_in_training(batch):
    torch.manual_seed(0)
    x, _ = batch
    model = build_image_model("autoencoder", {"width": 8, "code": 32, "noise_std": 0.3})
    assert model(x).shape == x.shape and model.encode(x).shape == (32, 32)
    model.eval()
    before = torch.nn.functional.mse_loss(model(x), x).item()
    assert torch.equal(model(x), model(x))  # no noise in eval mode
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), x)  # noisy input, clean target
        loss.backward()
        opt.step()
    model.eval()
    assert torch.nn.functional.mse_loss(model(x), x).item() < before / 3


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_rebuilt_from_config_gives_identical_outputs(name, batch):
    torch.manual_seed(0)
    model = build_image_model(name, SMALL.get(name, {"width": 8}))
    model.eval()
    copy = rebuild_image_model({"model": name, **model.cfg.to_dict()})
    copy.load_state_dict(model.state_dict())
    copy.eval()
    # a GAN maps noise (and classes) to images; the other families map images
    inputs = model.noise(len(batch[0]), torch.Generator().manual_seed(0)) if name == "dcgan" else (batch[0],)
    assert torch.equal(model(*inputs), copy(*inputs))


def test_unknown_model_or_option_is_refused():
    with pytest.raises(ValueError, match="one of lenet5, alexnet_small, resnet_small, autoencoder"):
        build_image_model("vgg")
    with pytest.raises(ValueError, match="has no option.*depth"):
        build_image_model("resnet_small", {"depth": 50})


def test_kernel_feature_map_and_reconstruction_pictures(batch, tmp_path):
    from PIL import Image

    from dl.viz.vision import feature_maps, kernel_grid, reconstruction_grid

    x, _ = batch
    lenet = build_image_model("lenet5")
    for png in (kernel_grid(lenet, tmp_path / "k.png"), feature_maps(lenet, x[0], tmp_path / "f.png")):
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 200
    ae = build_image_model("autoencoder", {"width": 8, "code": 16})
    noisy = (x[:6] + 0.3 * torch.randn_like(x[:6])).clamp(0, 1)
    with Image.open(reconstruction_grid(ae, x[:6], tmp_path / "r.png", noisy)) as img:
        assert img.height > img.width / 6 * 2  # three rows of six
    with pytest.raises(ValueError, match="has no Conv2d"):
        kernel_grid(torch.nn.Linear(2, 2), tmp_path / "none.png")
