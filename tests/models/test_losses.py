"""LaMEGAN losses: LSGAN values, the Laplacian perceptual loss (vgg19 / lassim / none), VGG weights lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage import data

from napari_uspmie import lassim
from napari_uspmie.metric.lassim import to_gray
from napari_uspmie.metric.pyramid import laplacian_residual
from napari_uspmie.models.losses import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LaplacianPerceptualLoss,
    LSGANLoss,
    discriminator_loss,
)
from napari_uspmie.models.networks import VGG19Features
from napari_uspmie.models.vgg_weights import (
    VGG19_FILENAME,
    VGGWeightsUnavailableError,
    build_vgg19_features,
    hub_checkpoint_path,
)
from tests.unpaired_data import write_fake_vgg19


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 gray (H, W) -> (1, 1, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(image.astype(np.float32) / 127.5 - 1.0)[None, None]


@pytest.fixture(scope="module")
def camera128() -> np.ndarray:
    return np.asarray(data.camera()[::4, ::4])  # 128x128 real photograph


def elastic(image: np.ndarray, alpha: float, sigma: float = 4.0, seed: int = 0) -> np.ndarray:
    """Smooth random displacement of ``alpha`` pixels: a structural deformation."""
    rng = np.random.default_rng(seed)
    dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, image.shape), sigma) for _ in range(2))
    dy, dx = dy / np.abs(dy).max() * alpha, dx / np.abs(dx).max() * alpha
    yy, xx = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    out = ndimage.map_coordinates(image.astype(np.float64), [yy + dy, xx + dx], order=1, mode="reflect")
    return np.clip(out, 0, 255).astype(np.uint8)


def box_blur(image: np.ndarray, k: int) -> np.ndarray:
    return ndimage.uniform_filter(image.astype(np.float64), k, mode="reflect").round().astype(np.uint8)


def test_lsgan_known_values():
    loss = LSGANLoss()
    pred = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    assert float(loss(pred, True)) == pytest.approx((1 + 0.25 + 0 + 1) / 4)
    assert float(loss(pred, False)) == pytest.approx((0 + 0.25 + 1 + 4) / 4)
    d = discriminator_loss(loss, torch.full((1, 1, 3, 3), 0.8), torch.full((1, 1, 3, 3), 0.4))
    assert float(d) == pytest.approx(0.5 * (0.2**2 + 0.4**2))


@pytest.mark.parametrize("kind", ["lassim", "vgg19"])
def test_perceptual_zero_for_identical_and_grows_with_deformation(kind, camera128):
    torch.manual_seed(0)
    features = VGG19Features() if kind == "vgg19" else None  # random VGG: the real file is not downloadable here
    loss = LaplacianPerceptualLoss(kind, level=2, features=features)
    x = as_tensor(camera128)
    values = [float(loss(x, as_tensor(elastic(camera128, a)))) for a in (0.0, 1.5, 4.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < values[1] < values[2]


def test_lassim_loss_is_one_minus_lassim_and_prefers_blur_to_deformation(camera128):
    loss = LaplacianPerceptualLoss("lassim", level=2)
    x = camera128
    blurred = box_blur(x, 5)
    deformed = box_blur(elastic(x, 4.0), 5)
    value = float(loss(as_tensor(x), as_tensor(blurred)))
    assert value == pytest.approx(1 - float(lassim(as_tensor(blurred), as_tensor(x), level=2)), abs=1e-5)
    assert value < float(loss(as_tensor(x), as_tensor(deformed)))


def test_vgg_loss_matches_its_definition():
    torch.manual_seed(1)
    vgg = VGG19Features()
    loss = LaplacianPerceptualLoss("vgg19", level=3, features=vgg)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def feats(x):
        r = laplacian_residual(to_gray(x), 3, 5).repeat(1, 3, 1, 1)
        return vgg((r - (mean - 1)) / (2 * std))

    assert float(loss(a, b)) == pytest.approx(float(F.l1_loss(feats(b), feats(a))), rel=1e-5)


def test_gradients_reach_the_translated_image_only():
    loss = LaplacianPerceptualLoss("lassim", level=2)
    ref = (torch.rand(1, 1, 64, 64) * 2 - 1).requires_grad_(True)
    out = (torch.rand(1, 1, 64, 64) * 2 - 1).requires_grad_(True)
    loss(ref, out).backward()
    assert out.grad is not None and float(out.grad.abs().sum()) > 0
    assert ref.grad is None or float(ref.grad.abs().sum()) == 0


def test_none_is_cyclegan_and_bad_settings_fail():
    none = LaplacianPerceptualLoss("none")
    assert not none.enabled and float(none(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))) == 0.0
    with pytest.raises(ValueError, match="perceptual_loss must be one of"):
        LaplacianPerceptualLoss("ssim")
    with pytest.raises(ValueError, match="too small"):
        LaplacianPerceptualLoss("lassim", level=3)(torch.zeros(1, 1, 40, 40), torch.zeros(1, 1, 40, 40))


def test_vgg_weights_from_explicit_path(tmp_path):
    path = write_fake_vgg19(tmp_path / "my-vgg.pth")
    loss = LaplacianPerceptualLoss("vgg19", vgg_weights=str(path), download=False)
    expected = torch.load(path, weights_only=True)["features.0.weight"]
    assert torch.equal(loss.vgg.features.features[0].weight, expected)


def test_vgg_weights_from_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert hub_checkpoint_path() == tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILENAME
    hub_checkpoint_path().parent.mkdir(parents=True)
    write_fake_vgg19(hub_checkpoint_path())
    assert isinstance(build_vgg19_features(download=False), VGG19Features)


def test_offline_without_weights_names_the_three_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    # A closed local port: the download really fails, as it does offline.
    monkeypatch.setenv("NAPARI_USPMIE_VGG19_URL", f"http://127.0.0.1:9/{VGG19_FILENAME}")
    with pytest.raises(VGGWeightsUnavailableError) as err:
        LaplacianPerceptualLoss("vgg19")
    message = str(err.value)
    assert "--vgg_weights" in message and str(hub_checkpoint_path()) in message and "internet" in message
    assert "--perceptual_loss lassim" in message
    with pytest.raises(VGGWeightsUnavailableError, match="does not exist"):
        build_vgg19_features(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a tensor file")
    with pytest.raises(VGGWeightsUnavailableError, match="cannot read"):
        build_vgg19_features(tmp_path / "junk.pth")
