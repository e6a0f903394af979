"""The fast path's pyrDown passes (depthwise convolutions, CPU float32) against OpenCV and float64.

Tolerance: float32 results within 1e-6 of OpenCV's float64 pyrDown on [0, 1] data (their own
rounding is about 1e-7).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from napari_uspmie.metric.bands import to_gray
from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.metric.pyramid import pyr_down
from napari_uspmie.metric.pyramid_filters import down_columns, down_rows, gaussian_level

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


@pytest.mark.parametrize("size", [(3, 5), (4, 4), (17, 12), (64, 48)])
def test_row_pass_sums_channels_like_a_separate_luma(size):
    """The luma taken inside the first row pass equals the luma taken before it, borders included."""
    x = _images((3, 3, *size), seed=7).float()
    weights = torch.tensor(GRAY_WEIGHTS)
    fused = down_rows(x, weights)
    assert fused.shape == (3, 1, (size[0] + 1) // 2, size[1])
    torch.testing.assert_close(fused, down_rows(to_gray(x)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="channel_weights"):
        down_rows(x, weights[:2])


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gaussian_level_equals_repeated_pyr_down(depth):
    """Rows of every level first, columns last: the same level as the reference pyr_down level by level."""
    x = _images((2, 3, 75, 98), seed=depth)
    expected = to_gray(x)
    for _ in range(depth):
        expected = pyr_down(expected)
    fast = gaussian_level(x.float(), depth, torch.tensor(GRAY_WEIGHTS))
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
