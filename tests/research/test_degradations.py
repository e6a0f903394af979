"""Box blur against cv2.blur and elastic deformation against an independent resampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, map_coordinates
from skimage import data

from napari_uspmie.research.degradations import box_blur, elastic_deform, elastic_displacement


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A real RGB picture with an odd size, float64 in [0, 1]."""
    return cv2.resize(data.astronaut(), (161, 97), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0


@pytest.mark.parametrize("ksize", [1, 3, 9, 13, 17, 4, (5, 8), (8, 1)])
def test_box_blur_is_cv2_blur(rgb, ksize):
    kh, kw = (ksize, ksize) if isinstance(ksize, int) else ksize
    expected = cv2.blur(rgb, (kw, kh))  # OpenCV takes (width, height)
    np.testing.assert_allclose(box_blur(rgb, ksize), expected, rtol=0, atol=1e-12)
    gray = rgb[..., 1].copy()
    np.testing.assert_allclose(box_blur(gray, ksize), cv2.blur(gray, (kw, kh)), rtol=0, atol=1e-12)


def test_box_blur_types_and_layouts(rgb):
    expected = cv2.blur(rgb, (13, 13))
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    out = box_blur(chw, 13)
    assert isinstance(out, torch.Tensor) and out.shape == chw.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-12)
    batch = torch.stack([chw, chw.flip(-1)])
    out = box_blur(batch, 13)
    np.testing.assert_allclose(out[1].permute(1, 2, 0).numpy(), cv2.blur(rgb[:, ::-1].copy(), (13, 13)), atol=1e-12)
    f32 = rgb.astype(np.float32)
    out32 = box_blur(f32, 9)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, cv2.blur(f32, (9, 9)), atol=1e-5)
    # integer images come back as float64 on the same scale, not rounded
    u8 = (rgb * 255).round().astype(np.uint8)
    out8 = box_blur(u8, 9)
    assert out8.dtype == np.float64
    np.testing.assert_allclose(out8, cv2.blur(u8.astype(np.float64), (9, 9)), atol=1e-10)


def test_box_blur_is_differentiable(rgb):
    x = torch.from_numpy(rgb).permute(2, 0, 1).clone().requires_grad_(True)
    box_blur(x, 5).sum().backward()
    # a normalised filter with a symmetric border: every pixel's total weight is about 1
    assert x.grad is not None and torch.isfinite(x.grad).all() and 0.5 < float(x.grad.mean()) < 1.5


def test_box_blur_errors():
    with pytest.raises(ValueError, match="kernel size"):
        box_blur(np.zeros((20, 20)), 0)
    with pytest.raises(ValueError, match="too small"):
        box_blur(np.zeros((8, 40)), 17)
    with pytest.raises(ValueError, match="arrays must be"):
        box_blur(np.zeros((2, 8, 8, 3)), 3)


def test_displacement_field_definition():
    field = elastic_displacement((60, 70), alpha=25.0, sigma=2.5, seed=3)
    rng = np.random.default_rng(3)
    raw = rng.uniform(-1.0, 1.0, size=(2, 60, 70))
    expected = np.stack([gaussian_filter(c, 2.5, mode="reflect") * 25.0 for c in raw])
    np.testing.assert_array_equal(field, expected)
    # the field is linear in alpha and reproducible
    np.testing.assert_allclose(elastic_displacement((60, 70), 50.0, 2.5, seed=3), 2 * field)
    assert not np.array_equal(field, elastic_displacement((60, 70), 25.0, 2.5, seed=4))
    with pytest.raises(ValueError, match="sigma"):
        elastic_displacement((10, 10), 1.0, 0.0)


def test_elastic_matches_independent_bilinear_resampler(rgb):
    field = elastic_displacement(rgb.shape[:2], alpha=35.0, sigma=2.5, seed=0)
    out = elastic_deform(rgb, alpha=0.0, displacement=field)
    rows, cols = np.meshgrid(np.arange(rgb.shape[0]), np.arange(rgb.shape[1]), indexing="ij")
    coords = [rows + field[0], cols + field[1]]
    # scipy's "mirror" is OpenCV's BORDER_REFLECT_101, which Albumentations' remap uses
    expected = np.stack([map_coordinates(rgb[..., c], coords, order=1, mode="mirror") for c in range(3)], axis=-1)
    np.testing.assert_allclose(out, expected, atol=1e-10)
    assert np.abs(out - rgb).max() > 0.1  # it did move things


def test_elastic_seed_types_and_identity(rgb):
    a = elastic_deform(rgb, alpha=25.0, sigma=2.5, seed=7)
    b = elastic_deform(rgb, alpha=25.0, sigma=2.5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == rgb.shape and a.dtype == rgb.dtype
    t = elastic_deform(torch.from_numpy(rgb).permute(2, 0, 1), alpha=25.0, sigma=2.5, seed=7)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), a, atol=1e-12)  # same field, any input type
    np.testing.assert_allclose(elastic_deform(rgb, alpha=0.0, seed=1), rgb, atol=1e-12)
    # batch items get successive fields of one generator
    batch = torch.from_numpy(rgb).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    out = elastic_deform(batch, alpha=25.0, seed=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    first = elastic_deform(rgb, alpha=25.0, seed=rng)
    second = elastic_deform(rgb, alpha=25.0, seed=rng)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), first, atol=1e-12)
    np.testing.assert_allclose(out[1].permute(1, 2, 0).numpy(), second, atol=1e-12)


def test_elastic_gradient_and_errors(rgb):
    x = torch.from_numpy(rgb[..., 0]).clone().requires_grad_(True)
    elastic_deform(x, alpha=15.0, seed=0).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="displacement must be"):
        elastic_deform(rgb, alpha=1.0, displacement=np.zeros((2, 5, 5)))
