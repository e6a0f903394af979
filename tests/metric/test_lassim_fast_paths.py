"""LaSSIM's fast paths against the plain computation.

Tolerances: float64 paths agree with the reference pipeline to 1e-12 (they run the same
arithmetic in a different order); float32 paths to 1e-6 (their own rounding, about 1e-7).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import napari_uspmie.metric.bands as ls
from napari_uspmie import lassim, lassim_map
from napari_uspmie.metric.pyramid import laplacian_pyramid, laplacian_residual, pyr_down
from tests.reference import reference_lassim, reference_residual


@pytest.fixture(scope="module")
def pairs(retina) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Five distinct 120x176 RGB pairs (crops of the retina) and their box blurs, uint8."""
    image = cv2.resize(retina, (400, 400), interpolation=cv2.INTER_AREA)
    refs = [np.ascontiguousarray(image[20 * i : 20 * i + 120, 30 * i : 30 * i + 176]) for i in range(5)]
    return [cv2.blur(r, (3 + 2 * i, 3 + 2 * i)) for i, r in enumerate(refs)], refs


def _tensor(images: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(dtype) / 255


@pytest.mark.parametrize("level", [0, 1, 3, 4])
def test_chunked_batch_equals_reference_per_pair(pairs, level, monkeypatch):
    """Cache-sized pieces (forced to one pair each here, taking pyramid level 1 or levels 1 and 2)
    and the whole-batch coarse levels change nothing."""
    preds, refs = pairs
    expected = np.array([reference_lassim(p, r, level) for p, r in zip(preds, refs, strict=True)])
    for chunk, level2_pixels in ((ls._CPU_CHUNK, ls._PIECE_LEVEL2_PIXELS), (1, ls._PIECE_LEVEL2_PIXELS), (1, 0)):
        monkeypatch.setattr(ls, "_CPU_CHUNK", chunk)
        monkeypatch.setattr(ls, "_PIECE_LEVEL2_PIXELS", level2_pixels)  # 0: level 2 in the pieces too
        exact = lassim(_tensor(preds, torch.float64), _tensor(refs, torch.float64), level=level)
        np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-12)
        fast = lassim(_tensor(preds, torch.float32), _tensor(refs, torch.float32), level=level)
        assert fast.dtype == torch.float32
        np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_convolution_pieces_equal_reference_per_pair(pairs, level, monkeypatch):
    """float32 pieces as convolutions (luma inside the first row pass, rows of every level before
    the columns), one pair per piece or the whole batch, 1 to 3 levels deep, bands and maps."""
    preds, refs = pairs
    expected = np.array([reference_lassim(p, r, level) for p, r in zip(preds, refs, strict=True)])
    p, r = _tensor(preds, torch.float32), _tensor(refs, torch.float32)
    levels_taken = []
    real_level = ls.gaussian_level
    monkeypatch.setattr(ls, "gaussian_level", lambda *a: levels_taken.append(a[1]) or real_level(*a))
    monkeypatch.setattr(ls, "_CONV_MIN_ELEMENTS", 0)
    for chunk, depth in ((1, 1), (1, 3), (ls._CONV_CHUNK, 2), (ls._CONV_CHUNK, 3)):
        monkeypatch.setattr(ls, "_CONV_CHUNK", chunk)
        monkeypatch.setattr(ls, "_CONV_DEPTH", depth)
        levels_taken.clear()
        fast = lassim(p, r, level=level)
        assert levels_taken and set(levels_taken) == {min(level, depth)}
        assert len(levels_taken) == (2 * len(preds) if chunk == 1 else 2)
        np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-6)
        heat = lassim_map(p, r, level=level)
        exact = lassim_map(p.double(), r.double(), level=level)
        # Per-pixel SSIM of near-flat windows magnifies float32 rounding: maps agree to 5e-5 (the
        # shifted-view float32 path: 1.4e-5 here), scores to 1e-6.
        torch.testing.assert_close(heat.double(), exact, rtol=0, atol=5e-5)


def test_large_float32_batches_take_the_convolutions(retina):
    """The default thresholds: a batch of four 512x512 pairs runs as convolutions, one 128x128 pair does not."""
    import napari_uspmie.metric.pyramid_filters as filters

    image = cv2.resize(retina, (512, 512), interpolation=cv2.INTER_AREA)
    blurred = cv2.blur(image, (9, 9))
    for size, batch, convolutions in ((512, 4, True), (128, 1, False)):
        small = [cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA) for a in (blurred, image)]
        p, r = (_tensor([a] * batch, torch.float32) for a in small)
        assert ls._use_convolutions(p) is convolutions
        expected = reference_lassim(small[0], small[1], 3)
        np.testing.assert_allclose(lassim(p, r).numpy(), expected, rtol=0, atol=1e-6)
    assert filters.conv_passes_apply(p)  # a small float32 pair could, but the calls would cost more


def test_map_of_chunked_batch_equals_single_items(pairs, monkeypatch):
    monkeypatch.setattr(ls, "_CPU_CHUNK", 1)
    preds, refs = pairs
    p, r = _tensor(preds, torch.float64), _tensor(refs, torch.float64)
    heat, scores = lassim_map(p, r, level=2, return_score=True)
    for i in range(len(preds)):
        one_heat, one_score = lassim_map(p[i : i + 1], r[i : i + 1], level=2, return_score=True)
        torch.testing.assert_close(heat[i : i + 1], one_heat, rtol=0, atol=1e-12)
        assert float(scores[i]) == pytest.approx(float(one_score[0]), abs=1e-12)


def test_default_dtype_follows_input():
    """Arrays take the exact float64 path, tensors their own dtype, integer tensors the float32 fast path."""
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    b = cv2.blur(a, (5, 5))
    expected = reference_lassim(b, a, 2)
    assert lassim(b, a, level=2) == pytest.approx(expected, abs=1e-12)
    b32, a32 = (b / 255).astype(np.float32), (a / 255).astype(np.float32)
    assert lassim(b32, a32, level=2) == lassim(b32.astype(np.float64), a32.astype(np.float64), level=2)
    assert lassim(b, a, level=2, dtype=torch.float32) == pytest.approx(expected, abs=1e-6)
    t = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    fast = lassim(t[1:], t[:1], level=2)
    assert fast.dtype == torch.float32 and float(fast[0]) == pytest.approx(expected, abs=1e-6)
    assert lassim(t[1:].double() / 255, t[:1].double() / 255, level=2).dtype == torch.float64


def test_gray_without_autograd_equals_gray_with_it(pairs):
    """The buffer-writing gray conversion (no autograd) and the differentiable one give the same band."""
    preds, refs = pairs
    p, r = _tensor(preds, torch.float64), _tensor(refs, torch.float64)
    plain = lassim(p, r, level=3)
    with_grad = lassim(p.clone().requires_grad_(True), r, level=3)
    torch.testing.assert_close(with_grad.detach(), plain, rtol=0, atol=1e-14)


def test_coarsest_level_is_stable_in_float32(retina_480x272):
    """The top level is a Gaussian with a large mean: float32 must not lose its variance to cancellation."""
    blurred = cv2.blur(retina_480x272, (9, 9))
    expected = reference_lassim(blurred, retina_480x272, 5)
    assert lassim(blurred, retina_480x272, level=5, dtype=torch.float32) == pytest.approx(expected, abs=1e-6)


def test_nan_in_one_item_of_a_batch_is_reported():
    x = torch.rand(3, 1, 64, 64)
    y = x.clone()
    y[1, 0, 10, 10] = float("nan")
    with pytest.raises(ValueError, match="ref contains NaN or Inf"):
        lassim(x, y, level=2)
    y[1, 0, 10, 10] = float("inf")
    with pytest.raises(ValueError, match="ref contains NaN or Inf"):
        lassim_map(x, y, level=2)


@pytest.mark.parametrize("shape", [(1, 1, 97, 130), (2, 1, 64, 33), (1, 1, 9, 10, 11)])
def test_pyramid_matches_opencv_and_its_own_full_pyramid(shape):
    """The single band equals the full pyramid's and, in 2D, OpenCV's (float64 to 1e-12)."""
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bands = laplacian_pyramid(x, max_level=2)
    for level in range(3):
        torch.testing.assert_close(laplacian_residual(x, level, 2), bands[2 - level], rtol=0, atol=0)
    if x.ndim == 4:
        for i in range(shape[0]):
            image = x[i, 0].numpy()
            np.testing.assert_allclose(pyr_down(x)[i, 0].numpy(), cv2.pyrDown(image), rtol=0, atol=1e-12)
            np.testing.assert_allclose(bands[1][i, 0].numpy(), reference_residual(image, 1, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 1, 3, 4), (1, 2, 5, 6), (1, 1, 37, 41), (2, 1, 128, 97), (1, 1, 9, 8, 7)])
def test_pyr_down_without_padded_copy_is_bit_identical(shape, monkeypatch):
    """The no-gradient path (reflected border samples gathered, no padded copy) against the padded
    path and OpenCV, every size parity, the smallest sizes and 3D."""
    import napari_uspmie.metric.pyramid as pyramid

    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(pyramid, "NO_PAD_MIN_ELEMENTS", 1 << 62)
    padded = pyr_down(x)
    monkeypatch.setattr(pyramid, "NO_PAD_MIN_ELEMENTS", 0)
    assert torch.equal(pyr_down(x), padded)
    out = torch.full_like(padded, float("nan"))
    assert pyr_down(x, out=out) is out and torch.equal(out, padded)
    if x.ndim == 4:
        np.testing.assert_allclose(padded[0, 0].numpy(), cv2.pyrDown(x[0, 0].numpy()), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="expected"):
        pyr_down(x, out=torch.empty(1))
    with pytest.raises(ValueError, match="no gradients"):
        pyr_down(x.clone().requires_grad_(), out=out)
    grad = x.clone().requires_grad_()
    pyr_down(grad).sum().backward()  # the loss's path keeps its gradients
    assert grad.grad is not None
