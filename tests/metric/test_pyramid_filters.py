"""pyrDown's passes as depthwise convolutions (the CPU float32 path) against OpenCV and float64.

Tolerance: float32 results within 1e-6 of OpenCV's float64 pyrDown on [0, 1] data (their own
rounding is about 1e-7); the float64 paths are untouched and stay exact.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

import napari_uspmie.metric.pyramid as pyramid
from napari_uspmie.metric.pyramid import gaussian_level, pyr_down
from napari_uspmie.metric.pyramid_filters import conv_passes_apply, down_columns, down_rows, mix_channels

SIZES = [(3, 3), (3, 4), (4, 3), (5, 6), (6, 5), (8, 9), (37, 41), (64, 33), (97, 130)]


def _images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _opencv_down(x: torch.Tensor) -> np.ndarray:
    """cv2.pyrDown of every plane of a float64 ``(B, C, H, W)`` batch."""
    planes = [[cv2.pyrDown(x[b, c].numpy()) for c in range(x.shape[1])] for b in range(x.shape[0])]
    return np.array(planes)


@pytest.mark.parametrize("size", SIZES)
def test_convolution_passes_equal_opencv(size, monkeypatch):
    """Both passes, every size parity down to 3 samples, several images and channels per call."""
    x = _images((2, 3, *size), seed=sum(size))
    calls = []
    monkeypatch.setattr(pyramid, "CONV_MIN_ELEMENTS", 0)
    monkeypatch.setattr(pyramid, "down_rows", lambda t: calls.append("rows") or down_rows(t))
    fast = pyr_down(x.float())
    assert calls == ["rows"], "pyr_down did not take the convolution path"
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    np.testing.assert_allclose(fast.double().numpy(), _opencv_down(x), rtol=0, atol=1e-6)
    out = torch.full_like(fast, float("nan"))
    assert pyr_down(x.float(), out=out) is out and torch.equal(out, fast)
    with pytest.raises(ValueError, match="expected"):
        pyr_down(x.float(), out=torch.empty(1))


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
    weights = torch.tensor([0.2125, 0.7154, 0.0721])
    fused = down_rows(x, weights)
    assert fused.shape == (3, 1, (size[0] + 1) // 2, size[1])
    torch.testing.assert_close(fused, down_rows(mix_channels(x, weights)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="channel_weights"):
        down_rows(x, weights[:2])


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_gaussian_level_equals_repeated_pyr_down(depth):
    """Rows of every level first, columns last: the same level as pyr_down level by level."""
    x = _images((2, 3, 75, 98), seed=depth)
    weights = torch.tensor([0.2125, 0.7154, 0.0721], dtype=torch.float64)
    expected = mix_channels(x, weights)
    for _ in range(depth):
        expected = pyr_down(expected)
    # float64 takes the plain path: bit-identical.
    assert torch.equal(gaussian_level(x, depth, weights), expected)
    fast = gaussian_level(x.float(), depth, weights.float())
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=1e-6)
    per_channel = gaussian_level(x.float(), depth).double()
    torch.testing.assert_close(per_channel, _level_per_channel(x, depth), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="depth"):
        gaussian_level(x, -1)


def _level_per_channel(x: torch.Tensor, depth: int) -> torch.Tensor:
    for _ in range(depth):
        x = pyr_down(x)
    return x


def test_convolution_path_serves_only_float32_cpu_images_without_gradients():
    x = torch.rand(1, 1, 16, 16)
    assert conv_passes_apply(x)
    assert not conv_passes_apply(x.double())
    assert not conv_passes_apply(torch.rand(1, 1, 8, 16, 16))  # volumes keep the shifted-view sums
    assert not conv_passes_apply(torch.rand(1, 1, 2, 16))  # pyrDown needs 3 samples per axis
    assert not conv_passes_apply(x.clone().requires_grad_())
    with torch.no_grad():
        assert conv_passes_apply(x.clone().requires_grad_())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that oneDNN's TF32 setting concerns Intel GPUs only
        with torch.backends.mkldnn.flags(enabled=False):
            assert not conv_passes_apply(x)


def test_pyr_down_keeps_gradients_for_the_loss():
    """With gradients the convolution path is not taken and the padded path's gradient flows."""
    x = torch.rand(2, 1, 600, 600, requires_grad=True)
    pyr_down(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
