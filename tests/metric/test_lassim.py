"""LaSSIM against the paper's OpenCV + scikit-image reference pipeline, and its properties."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import structural_similarity

from napari_uspmie import lassim, lassim_map
from napari_uspmie.metric.lassim import min_size_for_level
from tests.reference import reference_lassim


def test_paper_reference_values(retina, retina_480x272):
    blurred = cv2.blur(retina_480x272, (17, 17))
    assert lassim(blurred, retina_480x272) == pytest.approx(0.93168, abs=1e-4)
    square = cv2.resize(retina, (320, 320), interpolation=cv2.INTER_AREA)
    assert lassim(cv2.blur(square, (13, 13)), square) == pytest.approx(0.97104, abs=1e-4)


SIZES = [(272, 480), (320, 320), (301, 257), (211, 389), (64, 97)]


@pytest.mark.parametrize(
    ("size", "level"), [(s, lv) for s in SIZES for lv in range(6) if min(s) >= min_size_for_level(lv)]
)
def test_agrees_with_reference_rgb_uint8(retina, size, level):
    h, w = size
    image = cv2.resize(retina, (w, h), interpolation=cv2.INTER_AREA)
    blurred = cv2.blur(image, (9, 9))
    expected = reference_lassim(blurred, image, level)
    # Arrays: the exact float64 path by default; float32 on request: the fast path.
    assert lassim(blurred, image, level=level) == pytest.approx(expected, abs=1e-10)
    assert lassim(blurred, image, level=level, dtype=torch.float32) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("level", [1, 3, 4])
def test_agrees_with_reference_gray_dtypes(dtype, level):
    camera = data.camera()  # 512x512 uint8 photograph
    image = cv2.resize(camera, (333, 259), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 0.05, image.shape), 0, 1)
    if np.issubdtype(dtype, np.integer):
        scale = np.iinfo(dtype).max
        a, b = (np.round(image * scale).astype(dtype), np.round(noisy * scale).astype(dtype))
    else:
        a, b = image.astype(dtype), noisy.astype(dtype)
    assert lassim(b, a, level=level) == pytest.approx(reference_lassim(b, a, level), abs=1e-6)


def test_rgb_uint16_matches_reference(retina):
    image = (cv2.resize(retina, (256, 200), interpolation=cv2.INTER_AREA).astype(np.uint16)) * 257
    blurred = cv2.blur(image, (13, 13))
    expected = reference_lassim(blurred, image, 2)
    assert lassim(blurred, image, level=2) == pytest.approx(expected, abs=1e-10)
    assert lassim(blurred, image, level=2, dtype=torch.float32) == pytest.approx(expected, abs=1e-6)


def test_heatmap_matches_reference_full_map(retina_480x272):
    blurred = cv2.blur(retina_480x272, (17, 17))
    heat, score = lassim_map(blurred, retina_480x272, upsample=False, return_score=True)
    ref_score, ref_map = reference_lassim(blurred, retina_480x272, full=True)
    assert heat.shape == ref_map.shape == (34, 60)
    np.testing.assert_allclose(heat, ref_map, atol=1e-10)
    assert score == pytest.approx(ref_score, abs=1e-12)
    upsampled = lassim_map(blurred, retina_480x272)
    assert upsampled.shape == (272, 480)
    assert upsampled.min() >= heat.min() - 1e-12 and upsampled.max() <= heat.max() + 1e-12


def _scipy_band(volume: np.ndarray, level: int) -> np.ndarray:
    """Independent n-D pyramid: scipy 'mirror' is OpenCV's reflect-101."""
    taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16

    def down(v):
        for ax in range(v.ndim):
            v = ndimage.correlate1d(v, taps, axis=ax, mode="mirror")
        return v[tuple(slice(None, None, 2) for _ in range(v.ndim))]

    def up(v, shape):
        z = np.zeros(tuple(2 * s for s in v.shape))
        z[tuple(slice(None, None, 2) for _ in range(v.ndim))] = v
        for ax in range(v.ndim):
            z = ndimage.correlate1d(z, 2 * taps, axis=ax, mode="mirror")
        return z[tuple(slice(0, s) for s in shape)]

    g = [volume]
    for _ in range(level + 1):
        g.append(down(g[-1]))
    return g[level] - up(g[level + 1], g[level].shape)


def test_scipy_reference_pyramid_is_opencv_in_2d():
    image = cv2.resize(data.camera(), (211, 173), interpolation=cv2.INTER_AREA).astype(np.float64)
    from tests.reference import reference_residual

    np.testing.assert_allclose(_scipy_band(image, 2), reference_residual(image, 2), atol=1e-9)


def test_volume_matches_nd_reference():
    nib = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    vol = np.asarray(nib.load(f"{data_path}/anatomical.nii").dataobj, dtype=np.float64)  # 33x41x25 T1
    vol = np.pad(vol, 6, mode="reflect")  # 45x53x37: room for a level-2 band of 7^3 windows
    deformed = ndimage.shift(vol, (0.0, 1.5, 0.0), order=1, mode="nearest")
    level = 1
    lx, ly = _scipy_band(deformed, level), _scipy_band(vol, level)
    dr = max(lx.max(), ly.max()) - min(lx.min(), ly.min())
    expected = structural_similarity(lx, ly, data_range=dr)
    assert lassim(deformed, vol, level=level) == pytest.approx(expected, abs=1e-10)
    t = torch.from_numpy(np.stack([deformed, vol]))[:, None]
    heat = lassim_map(t[:1], t[1:], level=level)
    assert heat.shape == (1, 1, *vol.shape)


def test_identical_symmetric_and_affine_invariant(retina_480x272):
    blurred = cv2.blur(retina_480x272, (13, 13))
    assert lassim(retina_480x272, retina_480x272) == pytest.approx(1.0, abs=1e-12)
    assert lassim(blurred, retina_480x272) == pytest.approx(lassim(retina_480x272, blurred), abs=1e-12)
    a = retina_480x272.astype(np.float64) / 255
    b = blurred.astype(np.float64) / 255
    for level in (1, 3, 4):
        base = lassim(b, a, level=level)
        assert lassim(3.5 * b + 0.2, 3.5 * a + 0.2, level=level) == pytest.approx(base, abs=1e-9)
    # The top level is the Gaussian itself: only a pure scaling leaves it unchanged.
    top = lassim(b, a, level=5)
    assert lassim(2.0 * b, 2.0 * a, level=5) == pytest.approx(top, abs=1e-9)


def test_constant_images_are_defined():
    flat = np.full((64, 64), 0.5)
    assert lassim(flat, flat) == 1.0
    assert lassim(flat, np.full((64, 64), 0.7), level=2) == 1.0  # equal (zero) residuals
    heat = lassim_map(flat, flat)
    assert np.all(heat == 1.0)


def test_batch_equals_items_and_float32_path(retina_480x272):
    imgs = [retina_480x272, cv2.blur(retina_480x272, (9, 9)), cv2.blur(retina_480x272, (17, 17))]
    t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(torch.float64) / 255
    ref = t[:1].expand(3, -1, -1, -1)
    batch = lassim(t, ref)
    items = [reference_lassim(img, retina_480x272) for img in imgs]
    np.testing.assert_allclose(batch.numpy(), items, atol=1e-10)
    fast = lassim(t.float(), ref.float())
    assert fast.dtype == torch.float32
    np.testing.assert_allclose(fast.numpy(), items, atol=1e-4)


def test_gradients_flow():
    torch.manual_seed(0)
    ref = torch.rand(1, 1, 13, 15, dtype=torch.float64)
    pred = (ref + 0.1 * torch.rand_like(ref)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: lassim(p, ref, level=1), (pred,))
    loss = 1 - lassim(pred, ref, level=1).mean()
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_runs_on_tensor_device_and_dtype():
    x = torch.rand(2, 3, 64, 64)
    out = lassim(x, x.flip(-1), level=2)
    assert out.shape == (2,) and out.dtype == torch.float32 and out.device == x.device


@pytest.mark.parametrize(
    ("pred", "ref", "message"),
    [
        (np.zeros((64, 64)), np.zeros((64, 65)), "same shape"),
        (torch.zeros(1, 2, 64, 64), torch.zeros(1, 2, 64, 64), "1 \\(gray\\) or 3 \\(RGB\\) channels"),
        (torch.zeros(64, 64), torch.zeros(64, 64), "\\(B, C, H, W\\)"),
        (np.zeros((40, 64)), np.zeros((40, 64)), "at least 49 samples"),
        (np.full((64, 64), np.nan), np.zeros((64, 64)), "NaN or Inf"),
        (np.zeros((64, 64)), np.full((64, 64), np.inf), "NaN or Inf"),
        (np.array([["a"]]), np.array([["a"]]), "unsupported array dtype"),
    ],
)
def test_bad_inputs_raise_clear_errors(pred, ref, message):
    with pytest.raises(ValueError, match=message):
        lassim(pred, ref)


def test_level_out_of_range():
    with pytest.raises(ValueError, match="level must be in"):
        lassim(np.zeros((512, 512)), np.zeros((512, 512)), level=6, max_level=5)
