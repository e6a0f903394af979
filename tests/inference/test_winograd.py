"""Winograd F(4x4, 3x3) convolution against ``F.conv2d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.inference.winograd import (
    WinogradConv2d,
    is_winograd_eligible,
    to_winograd,
    winograd_conv3x3,
    winograd_weight,
)
from napari_uspmie.models.networks import ResnetGenerator


@pytest.mark.parametrize("size", [(3, 3), (6, 6), (7, 11), (13, 9), (34, 34)])
def test_float64_equals_direct_convolution(size):
    """The algorithm is exact: in float64 only rounding separates it from ``F.conv2d``, whatever the size
    (sizes that are not 4k + 2 leave partial tiles at the bottom and right)."""
    g = torch.Generator().manual_seed(sum(size))
    x = torch.randn(2, 5, *size, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    got = winograd_conv3x3(x, winograd_weight(weight), bias)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias), rtol=0, atol=1e-12)


def test_float32_within_a_few_1e5_of_the_output_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 66, 66, generator=g)
    weight = torch.randn(64, 64, 3, 3, generator=g) / 24
    direct = F.conv2d(x.double(), weight.double())
    err = (winograd_conv3x3(x, winograd_weight(weight)).double() - direct).abs().max()
    assert err <= 5e-5 * direct.abs().max()


def test_module_keeps_the_layer_padding_and_rejects_other_layers():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 10, 15)
    with torch.no_grad():
        torch.testing.assert_close(WinogradConv2d(conv)(x), conv(x), rtol=0, atol=1e-5)
    reflect = nn.Conv2d(3, 8, 3, padding_mode="reflect", padding=1)
    for other in (nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(3, 8, 5), reflect):
        assert not is_winograd_eligible(other)
        with pytest.raises(ValueError, match="3x3 stride-1"):
            WinogradConv2d(other)
    with pytest.raises(ValueError, match="channels"):
        winograd_conv3x3(torch.randn(1, 2, 8, 8), winograd_weight(torch.randn(4, 3, 3, 3)))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        winograd_conv3x3(torch.randn(1, 3, 2, 8), winograd_weight(torch.randn(4, 3, 3, 3)))


def test_generator_copy_replaces_only_the_residual_convolutions():
    """The paper's generator: its 18 residual 3x3 convolutions change (stem, head, strided and transposed
    layers stay); the network passed in is untouched and the copy's output is within 1e-4 of it."""
    torch.manual_seed(0)
    net = ResnetGenerator(in_channels=3, out_channels=3, ngf=8, n_blocks=9).eval()
    fast = to_winograd(net)
    assert sum(isinstance(m, WinogradConv2d) for m in fast.modules()) == 18
    assert not any(isinstance(m, WinogradConv2d) for m in net.modules())
    x = torch.rand(2, 3, 60, 44) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=0, atol=1e-4)
