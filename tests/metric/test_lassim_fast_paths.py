"""LaSSIM's two paths to the band, each against the reference pipeline, and the choice between them.

Tolerances: float64 agrees with the reference pipeline to 1e-12 (the same arithmetic in a
different order); float32, on either path, to 1e-6 (its own rounding, about 1e-7).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_uspmie import lassim, lassim_map
from napari_uspmie.metric.bands import fast_path_applies, pairs_per_piece
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
def test_batch_equals_reference_per_pair(pairs, level):
    """A batch of distinct pairs on the reference path, float64 and float32, scores each pair as the reference does."""
    preds, refs = pairs
    expected = np.array([reference_lassim(p, r, level) for p, r in zip(preds, refs, strict=True)])
    exact = lassim(_tensor(preds, torch.float64), _tensor(refs, torch.float64), level=level)
    np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-12)
    p, r = _tensor(preds, torch.float32), _tensor(refs, torch.float32)
    fast = lassim(p, r, level=level, path="reference")
    assert fast.dtype == torch.float32
    np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_fast_path_equals_reference_per_pair(pairs, level):
    """The fast path (each axis down to the level in one call), chosen for any float32 batch: scores and maps."""
    preds, refs = pairs
    expected = np.array([reference_lassim(p, r, level) for p, r in zip(preds, refs, strict=True)])
    p, r = _tensor(preds, torch.float32), _tensor(refs, torch.float32)
    assert fast_path_applies(p, r, level) and not fast_path_applies(p, r, level, path="reference")
    fast = lassim(p, r, level=level, path="fast")
    np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-6)
    heat = lassim_map(p, r, level=level, path="fast")
    exact = lassim_map(p.double(), r.double(), level=level)
    # Per-pixel SSIM of near-flat windows magnifies float32 rounding: maps agree to 5e-5 (the
    # reference path in float32: 1.4e-5 here), scores to 1e-6.
    torch.testing.assert_close(heat.double(), exact, rtol=0, atol=5e-5)


def test_pieces_equal_reference_per_pair(retina):
    """Five distinct 1024x1024 pairs fill several pieces (float32: two, two, then one; float64: one each):
    each pair still scores as the reference does, at the paper's level and at the top of the pyramid."""
    image = cv2.resize(retina, (1100, 1100), interpolation=cv2.INTER_AREA)
    refs = [np.ascontiguousarray(image[15 * i : 15 * i + 1024, 19 * i : 19 * i + 1024]) for i in range(5)]
    preds = [cv2.blur(ref, (3 + 4 * i, 3 + 4 * i)) for i, ref in enumerate(refs)]
    p, r = _tensor(preds, torch.float32), _tensor(refs, torch.float32)
    assert pairs_per_piece(p) == 2 and pairs_per_piece(p.double()) == 1
    for level in (3, 5):
        assert fast_path_applies(p, r, level)
        expected = [reference_lassim(a, b, level) for a, b in zip(preds, refs, strict=True)]
        np.testing.assert_allclose(lassim(p, r, level=level).numpy(), expected, rtol=0, atol=1e-6)
        exact = lassim(_tensor(preds, torch.float64), _tensor(refs, torch.float64), level=level)
        np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-12)


def test_float32_batches_of_any_size_take_the_fast_path(retina):
    """The default choice: a batch of four 512x512 pairs and one 64x64 pair both take the fast path."""
    image = cv2.resize(retina, (512, 512), interpolation=cv2.INTER_AREA)
    blurred = cv2.blur(image, (9, 9))
    for size, batch in ((512, 4), (64, 1)):
        small = [cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA) for a in (blurred, image)]
        p, r = (_tensor([a] * batch, torch.float32) for a in small)
        assert fast_path_applies(p, r, 3)
        expected = reference_lassim(small[0], small[1], 3)
        np.testing.assert_allclose(lassim(p, r).numpy(), expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(lassim(p, r, path="reference").numpy(), expected, rtol=0, atol=1e-6)


def test_the_choice_of_path():
    """What the fast path serves: bands above level 0 of 2D float32 or float64 CPU batches without gradients."""
    x = torch.rand(1, 3, 1024, 1024)
    assert fast_path_applies(x, x, 3) and fast_path_applies(x.double(), x.double(), 3)
    assert not fast_path_applies(x, x, 0)  # the full-resolution band needs the full-size luma anyway
    assert not fast_path_applies(x, x, 3, path="reference")
    assert not fast_path_applies(x.half(), x.half(), 3)
    assert not fast_path_applies(torch.rand(1, 1, 8, 512, 512), torch.rand(1, 1, 8, 512, 512), 3)  # volumes
    grad = x.clone().requires_grad_()
    assert not fast_path_applies(grad, x, 3) and not fast_path_applies(x, grad, 3)
    with torch.no_grad():
        assert fast_path_applies(grad, x, 3)
    for bad in (x.half(), grad):
        with pytest.raises(ValueError, match="fast path serves"):
            lassim(bad, x.to(bad.dtype), path="fast")
    with pytest.raises(ValueError, match="fast path serves"):
        lassim(x, x, level=0, path="fast")
    with pytest.raises(ValueError, match="path must be"):
        lassim(x, x, path="quick")


def test_map_of_batch_equals_single_items(pairs):
    preds, refs = pairs
    p, r = _tensor(preds, torch.float64), _tensor(refs, torch.float64)
    heat, scores = lassim_map(p, r, level=2, return_score=True)
    for i in range(len(preds)):
        one_heat, one_score = lassim_map(p[i : i + 1], r[i : i + 1], level=2, return_score=True)
        torch.testing.assert_close(heat[i : i + 1], one_heat, rtol=0, atol=1e-12)
        assert float(scores[i]) == pytest.approx(float(one_score[0]), abs=1e-12)


def test_default_dtype_follows_input():
    """Arrays take float64 (exact), tensors their own dtype, integer tensors float32."""
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


def test_score_with_autograd_equals_score_without(pairs):
    """Recording gradients changes nothing in the band."""
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
def test_pyr_down_at_every_size_parity(shape):
    """The reference pyrDown against OpenCV (2D) or scipy's reflect-101 (3D), every size parity, the
    smallest sizes; its gradient flows (the loss's path)."""
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    down = pyr_down(x)
    taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    for b in range(shape[0]):
        for c in range(shape[1]):
            plane = x[b, c].numpy()
            if x.ndim == 4:
                expected = cv2.pyrDown(plane)
            else:
                expected = plane
                for axis in range(plane.ndim):  # scipy's "mirror" is OpenCV's reflect-101
                    expected = ndimage.correlate1d(expected, taps, axis=axis, mode="mirror")
                expected = expected[::2, ::2, ::2]
            np.testing.assert_allclose(down[b, c].numpy(), expected, rtol=0, atol=1e-12)
    grad = x.clone().requires_grad_()
    pyr_down(grad).sum().backward()
    assert grad.grad is not None


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_user_layout_uint8_channels_last_scores_as_the_reference(pairs, path):
    """uint8 (H, W, 3) arrays stacked and permuted (a channels-last uint8 batch, what users build) give the
    reference's scores, converted piece by piece without a float copy of the batch."""
    preds, refs = pairs
    p = torch.from_numpy(np.stack(preds)).permute(0, 3, 1, 2)
    r = torch.from_numpy(np.stack(refs)).permute(0, 3, 1, 2)
    assert p.dtype == torch.uint8 and p.is_contiguous(memory_format=torch.channels_last)
    expected = np.array([reference_lassim(a, b) for a, b in zip(preds, refs, strict=True)])
    scores = lassim(p, r, path=path)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=1e-6)
    # a channels-last float batch and a uint8 pred against a float ref score the same
    np.testing.assert_allclose(lassim(p.float() / 255, r.float() / 255, path=path).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(lassim(p, r.float() / 255, path=path).numpy(), expected, atol=1e-6)


def test_a_faint_detail_is_not_taken_for_a_flat_image():
    """A white image with one pixel a grey level darker (a band far below the image's values) against a
    plain white one: scored as the reference does, not as two flat images (1.0); flat pairs score 1."""
    white = np.full((256, 256), 255, np.uint8)
    dotted = white.copy()
    dotted[100, 100] = 254
    expected = reference_lassim(white, dotted, 3)
    assert expected < 0.9
    pair = [torch.from_numpy(a)[None, None] for a in (white, dotted)]
    assert fast_path_applies(*pair, 3)
    assert float(lassim(*pair, level=3)) == pytest.approx(expected, abs=2e-3)  # float32 on a band of 1e-5
    assert float(lassim(*[t.double() for t in pair], level=3)) == pytest.approx(expected, abs=1e-12)
    flat = torch.full((2, 3, 64, 64), 0.7)
    assert lassim(flat, torch.full_like(flat, 0.3), level=2).tolist() == [1.0, 1.0]
