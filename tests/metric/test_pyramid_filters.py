"""The fast path's Gaussian levels (banded matrix products per axis, CPU) against OpenCV and the reference steps.

Tolerance: float32 results within 1e-6 of OpenCV's float64 pyrDown on [0, 1] data (their own
rounding is about 1e-7); float64 within 1e-15 of the reference steps, 1e-12 of OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from napari_uspmie.metric import axis_maps
from napari_uspmie.metric.bands import to_gray
from napari_uspmie.metric.pyramid import pyr_down, pyr_down_axis
from napari_uspmie.metric.pyramid_filters import down_blocks, down_columns, down_rows, gaussian_level

SIZES = [(3, 3), (3, 4), (4, 3), (5, 6), (6, 5), (8, 9), (37, 41), (64, 33), (97, 130)]


def _images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _opencv_down(x: torch.Tensor) -> np.ndarray:
    """cv2.pyrDown of every plane of a float64 ``(B, C, H, W)`` batch."""
    planes = [[cv2.pyrDown(x[b, c].numpy()) for c in range(x.shape[1])] for b in range(x.shape[0])]
    return np.array(planes)


@pytest.mark.parametrize("size", SIZES)
def test_convolution_passes_equal_opencv(size):
    """Both passes, every size parity down to 3 samples, several images and channels per call."""
    x = _images((2, 3, *size), seed=sum(size))
    fast = gaussian_level(x.float(), 1)
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    np.testing.assert_allclose(fast.double().numpy(), _opencv_down(x), rtol=0, atol=1e-6)


def test_each_pass_filters_its_own_axis():
    """Rows then columns equals columns then rows (separable), and each pass halves only its axis."""
    x = _images((1, 2, 21, 30), seed=5).float()
    rows, columns = down_rows(x), down_columns(x)
    assert rows.shape == (1, 2, 11, 30) and columns.shape == (1, 2, 21, 15)
    torch.testing.assert_close(down_columns(rows), down_rows(columns), rtol=0, atol=1e-6)
    reference = _opencv_down(x.double())
    np.testing.assert_allclose(down_columns(rows).double().numpy(), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gaussian_level_equals_repeated_pyr_down(depth):
    """Rows of every level first, columns last: the same level as the reference pyr_down level by level."""
    x = _images((2, 3, 75, 98), seed=depth)
    expected = to_gray(x)
    for _ in range(depth):
        expected = pyr_down(expected)
    fast = gaussian_level(to_gray(x).float(), depth)
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=1e-6)
    per_channel = gaussian_level(x.float(), depth).double()
    torch.testing.assert_close(per_channel, _level_per_channel(x, depth), rtol=0, atol=1e-6)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="depth"):
            gaussian_level(x.float(), bad)


def _level_per_channel(x: torch.Tensor, depth: int) -> torch.Tensor:
    for _ in range(depth):
        x = pyr_down(x)
    return x


def test_pyr_down_keeps_gradients_for_the_loss():
    """The reference pyr_down, the loss's, records gradients at any size."""
    x = torch.rand(2, 1, 600, 600, requires_grad=True)
    pyr_down(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.fixture
def fresh_blocks():
    """The block cache emptied before and after a test that changes the block size."""
    down_blocks.cache_clear()
    yield
    down_blocks.cache_clear()


@pytest.mark.parametrize("per_block", [1, 3, 16, 10**6], ids=["1", "3", "16", "one block"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("size", [(49, 50), (50, 51), (64, 97), (131, 200)])
def test_blocks_of_any_size_equal_the_reference_steps(monkeypatch, fresh_blocks, per_block, depth, size):
    """Gaussian levels by blocks of 1, 3, 16 outputs and the whole axis as one block: every size parity,
    three depths, in float32 and float64, against the reference steps level by level."""
    monkeypatch.setattr(axis_maps, "OUTPUTS_PER_BLOCK", per_block)
    x = _images((2, 1, *size), seed=depth + size[0])
    expected = _level_per_channel(x, depth)
    torch.testing.assert_close(gaussian_level(x.float(), depth).double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(gaussian_level(x, depth), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("n", "depth"), [(700, 3), (1001, 1), (1500, 5), (333, 2)])
def test_blocks_of_long_axes_equal_the_whole_axis_map(n, depth):
    """Blocks are built on windows of the axis: on long axes they still equal the reference steps run on
    the whole axis (the full identity), interior and both ends."""
    exact = torch.eye(n, dtype=torch.float64).view(1, 1, n, n)
    for _ in range(depth):
        exact = pyr_down_axis(exact, 2)
    whole = torch.zeros_like(exact[0, 0])
    for b in down_blocks(n, depth):
        rows, cols = b.weights.shape
        whole[b.first_output : b.first_output + rows, b.first_sample : b.first_sample + cols] = b.weights
    torch.testing.assert_close(whole, exact[0, 0], rtol=0, atol=0)


def test_long_images_match_opencv_level_by_level():
    """Three OpenCV pyrDowns of a 60x1500 image (many interior blocks along the columns) against the level."""
    x = _images((1, 1, 60, 1500), seed=4)
    expected = x[0, 0].numpy()
    for _ in range(3):
        expected = cv2.pyrDown(expected)
    np.testing.assert_allclose(gaussian_level(x, 3)[0, 0].numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gaussian_level(x.float(), 3)[0, 0].double().numpy(), expected, rtol=0, atol=1e-6)


def test_blocks_hold_the_whole_map():
    """The blocks of 3 pyrDown steps along 272 samples, put together, are the reference steps' map
    (reflect-101 borders included); each output's weights sum to 1."""
    n, depth = 272, 3
    blocks = down_blocks(n, depth)
    assert [b.first_output for b in blocks] == [0, 16, 32]
    whole = torch.zeros(34, n, dtype=torch.float64)
    for b in blocks:
        rows, cols = b.weights.shape
        whole[b.first_output : b.first_output + rows, b.first_sample : b.first_sample + cols] = b.weights
        torch.testing.assert_close(b.weights.sum(dim=1), torch.ones(rows, dtype=torch.float64), rtol=0, atol=1e-15)
    exact = torch.eye(n, dtype=torch.float64).view(1, 1, n, n)
    for _ in range(depth):
        exact = pyr_down_axis(exact, 2)
    torch.testing.assert_close(whole, exact[0, 0], rtol=0, atol=1e-16)
    with pytest.raises(ValueError, match="too short"):
        down_blocks(8, 3)  # 8, 4, then 2 samples: too few for the third step
