"""One-output-channel convolutions as depthwise convolution + channel sum, against ``F.conv2d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.inference.depthwise_sum import DepthwiseSumConv2d, is_depthwise_sum_eligible, to_depthwise_sum
from napari_uspmie.models.networks import ResnetGenerator


@pytest.mark.parametrize(
    "kwargs", [{"kernel_size": 7}, {"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": 5, "bias": False}]
)
def test_equals_the_convolution(kwargs):
    """Exact in float64 (only the order of the sums differs), float32 to its rounding."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 1, **kwargs).double()
    x = torch.randn(2, 16, 23, 30, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(DepthwiseSumConv2d(conv)(x), conv(x), rtol=0, atol=1e-12)
        conv32, x32 = conv.float(), x.float()
        torch.testing.assert_close(DepthwiseSumConv2d(conv32)(x32), F.conv2d(x32, conv32.weight, conv32.bias,
                                   conv32.stride, conv32.padding), rtol=0, atol=1e-5)  # fmt: skip


def test_only_one_output_channel_layers_change():
    for other in (nn.Conv2d(16, 2, 3), nn.Conv2d(1, 1, 3), nn.Conv2d(4, 1, 3, padding=1, padding_mode="reflect")):
        assert not is_depthwise_sum_eligible(other)
        with pytest.raises(ValueError, match="one output channel"):
            DepthwiseSumConv2d(other)
    torch.manual_seed(0)
    net = ResnetGenerator(in_channels=1, out_channels=1, ngf=8, n_blocks=2).eval()
    fast = to_depthwise_sum(net)
    assert sum(isinstance(m, DepthwiseSumConv2d) for m in fast.modules()) == 1  # the 7x7 head
    assert not any(isinstance(m, DepthwiseSumConv2d) for m in net.modules())
    x = torch.rand(2, 1, 40, 36) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=0, atol=1e-5)
