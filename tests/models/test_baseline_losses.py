"""The baselines' generator terms (StillGAN's illumination and structure, MIINet's VGG19 term) and the
official training code's bilinear loss pyramid, tested for their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_uspmie.errors import SettingError
from napari_uspmie.models.bilinear_pyramid import bilinear_laplacian_residual
from napari_uspmie.models.losses import ImagePerceptualLoss, LaplacianPerceptualLoss
from napari_uspmie.models.networks import VGG19Features
from napari_uspmie.models.stillgan_losses import IlluminationLoss, StructureLoss
from napari_uspmie.models.vgg_weights import build_vgg19_features
from napari_uspmie.training.methods import METHODS, method_settings, perceptual_term
from tests.io_factories import mni_slices
from tests.unpaired_data import write_fake_vgg19


def brain(side: int = 128) -> torch.Tensor:
    """``(1, 1, side, side)`` MNI slice in [-1, 1]."""
    picture = mni_slices(1, step=1)[0].astype(np.float64)
    picture = ndimage.zoom(picture, side / min(picture.shape))[:side, :side]
    scaled = 2.0 * (picture - picture.min()) / (picture.max() - picture.min()) - 1.0
    return torch.from_numpy(scaled).float()[None, None]


# ----------------------------------------------------------------------------- StillGAN: illumination


def test_illumination_is_zero_for_equal_local_means_and_grows_with_uneven_light():
    loss = IlluminationLoss()
    stripes = torch.zeros(1, 1, 128, 128)
    stripes[..., ::2] = 0.8  # fine texture: every 32- and 64-pixel window has the same mean
    assert float(loss(stripes - 0.4)) == pytest.approx(0.0, abs=1e-6)
    ramp = torch.linspace(-1, 1, 128).expand(1, 1, 128, 128)
    weak, strong = float(loss(0.2 * ramp)), float(loss(0.8 * ramp))
    assert 0 < weak < strong and strong == pytest.approx(4 * weak, rel=1e-4)  # linear in the deviation


def test_illumination_uses_the_central_region_and_fits_small_patches():
    loss = IlluminationLoss(roi_size=256)
    assert loss.region_side(300, 400) == 256 and loss.region_side(128, 200) == 128
    lit = torch.zeros(1, 1, 320, 320)
    lit[..., :32, :] = 1.0  # bright band outside the central 256 square
    assert float(loss(lit)) == 0.0
    with pytest.raises(ValueError, match="too small for illumination windows"):
        loss(torch.zeros(1, 1, 48, 48))
    with pytest.raises(ValueError, match="multiple of every window"):
        IlluminationLoss(roi_size=100)


def test_illumination_gradients_flow():
    x = (0.5 * torch.linspace(-1, 1, 128).expand(1, 1, 128, 128)).clone().requires_grad_(True)
    IlluminationLoss()(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- StillGAN: structure


def test_structure_is_zero_for_identical_images_and_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    image = brain()
    loss = StructureLoss(noise_std=0.0)
    assert float(loss(image, image)) == pytest.approx(0.0, abs=1e-6)
    assert float(StructureLoss()(image, image)) == pytest.approx(0.0, abs=1e-6)  # the same noise on both
    relit = 0.6 * image + 0.2  # structure term: invariant to local mean and contrast
    moved = torch.roll(image, shifts=(5, -4), dims=(2, 3))
    assert float(loss(image, relit)) < 0.02 < float(loss(image, moved))


def test_structure_gradients_flow_and_stay_finite_on_flat_images():
    image = brain()
    out = (image * 0.9).clone().requires_grad_(True)
    StructureLoss()(image, out).backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    flat = torch.zeros(1, 1, 64, 64, requires_grad=True)
    value = StructureLoss(noise_std=0.0)(torch.zeros(1, 1, 64, 64), flat)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(flat.grad).all()


# ----------------------------------------------------------------------------- MIINet: VGG19 of images


def test_image_perceptual_loss_with_weights_in_torchvision_format(tmp_path):
    weights = write_fake_vgg19(tmp_path / "vgg19.pth")
    loss = ImagePerceptualLoss(weights)
    expected = torch.load(weights, weights_only=True)["features.0.weight"]
    assert torch.equal(loss.vgg.features.features[0].weight, expected)
    image = brain(64)
    assert float(loss(image, image)) == 0.0
    out = (image * 0.5).clone().requires_grad_(True)
    value = loss(image, out)
    value.backward()
    assert value > 0 and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())  # VGG is frozen
    loss.train()
    assert not loss.vgg.features.training


# ----------------------------------------------------------------------------- the official loss pyramid


def test_bilinear_band_equals_kornia_pyramid():
    from kornia.geometry.transform import pyramid  # the test extra installs kornia

    rgb = torch.rand(2, 3, 64, 96, dtype=torch.float64) * 2 - 1
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    gauss = [(rgb * weights).sum(1, keepdim=True)]  # torchvision's Grayscale
    for _ in range(4):
        gauss.append(pyramid.pyrdown(gauss[-1]))
    for level in (0, 2, 3):
        expected = gauss[level] - pyramid.pyrup(gauss[level + 1])
        torch.testing.assert_close(bilinear_laplacian_residual(rgb, level, 5), expected, rtol=0, atol=1e-12)


def test_bilinear_and_metric_bands_agree_in_shape_and_correlate():
    image = brain(256)
    kornia_loss = LaplacianPerceptualLoss("lassim", level=3, pyramid="kornia")
    metric_loss = LaplacianPerceptualLoss("lassim", level=3)
    a, b = kornia_loss.residual(image), metric_loss.residual(image)
    assert a.shape == b.shape == (1, 1, 32, 32)
    correlation = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert correlation > 0.8, correlation
    assert not torch.allclose(a, b, atol=1e-3)  # two pyramids, not one
    assert float(kornia_loss(image, image)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 16"):
        kornia_loss(image[..., :200, :200], image[..., :200, :200])
    with pytest.raises(SettingError, match="loss_pyramid must be one of metric, kornia"):
        LaplacianPerceptualLoss("lassim", pyramid="opencv")


# ----------------------------------------------------------------------------- method table


def test_method_defaults_are_the_official_codes():
    assert set(METHODS) == {"lamegan", "cyclegan", "stillgan", "miinet"}
    assert method_settings("lamegan") == {
        "lambda_identity": 0.0, "perceptual_loss": "vgg19", "lambda_perceptual": 0.25,
        "lambda_illumination": 0.0, "lambda_structure": 0.0,
    }  # fmt: skip
    still = method_settings("StillGAN")
    assert (still["lambda_identity"], still["lambda_illumination"], still["lambda_structure"]) == (0.5, 0.1, 0.5)
    assert method_settings("miinet")["lambda_perceptual"] == 0.5
    assert method_settings("cyclegan")["perceptual_loss"] == "none"
    with pytest.raises(SettingError, match="method 'pix2pix' is not one of lamegan, cyclegan, stillgan, miinet"):
        method_settings("pix2pix")


def test_perceptual_term_of_each_method(tmp_path):
    weights = write_fake_vgg19(tmp_path / "vgg19.pth")
    assert isinstance(perceptual_term("miinet", "vgg19", vgg_weights=weights), ImagePerceptualLoss)
    lamegan = perceptual_term("lamegan", "vgg19", vgg_weights=weights, loss_pyramid="kornia")
    assert isinstance(lamegan, LaplacianPerceptualLoss) and lamegan.pyramid == "kornia"
    assert not perceptual_term("cyclegan", "none").enabled
    with pytest.raises(SettingError, match="miinet compares VGG19 features"):
        perceptual_term("miinet", "lassim")
    assert isinstance(build_vgg19_features(weights), VGG19Features)
