"""Resize-convolutions as phase filters: the same layer, computed at the low resolution."""

from __future__ import annotations

import pytest
import torch

from napari_uspmie.inference.compilation import compile_layers, eager_layers
from napari_uspmie.inference.depthwise_sum import DepthwiseSumConv2d
from napari_uspmie.inference.phase_upsample import PhaseResizeConv2d, phase_weight, to_phase_upsample
from napari_uspmie.models.networks import ResizeConv2d, ResnetGenerator


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 3, 16, 9), (3, 3, 2, 2)])
def test_phase_filters_give_the_resize_convolution(shape, bias):
    torch.manual_seed(0)
    layer = ResizeConv2d(3, 5, bias=bias).eval()
    x = torch.randn(shape, dtype=torch.float64)
    layer.double()
    with torch.no_grad():
        want = layer(x)
        got = PhaseResizeConv2d(layer)(x)
    assert got.shape == want.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)  # borders included


def test_phase_weights_of_the_centre_tap_read_the_pixel_each_output_copies():
    # with only its centre tap, the layer is nearest-neighbour doubling: every output phase reads low-resolution
    # pixel (i, j), which is the second sample of an even phase's window (i - 1, i) and the first of an odd one's
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 1] = 1
    phases = phase_weight(weight)  # (4, 1, 2, 2): phases (0, 0), (0, 1), (1, 0), (1, 1)
    assert phases[0, 0].tolist() == [[0, 0], [0, 1]]
    assert phases[1, 0].tolist() == [[0, 0], [1, 0]]
    assert phases[2, 0].tolist() == [[0, 1], [0, 0]]
    assert phases[3, 0].tolist() == [[1, 0], [0, 0]]


def test_rewritten_generators_match_the_network_and_leave_it_untouched():
    torch.manual_seed(1)
    net = ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize").eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(2, 1, 36, 52) * 2 - 1
    fast = eager_layers(net)
    assert sum(isinstance(m, PhaseResizeConv2d) for m in fast.modules()) == 2
    assert any(isinstance(m, DepthwiseSumConv2d) for m in fast.modules())
    with torch.no_grad():
        # instance norms of a freshly initialised network amplify rounding: 1e-4 of the [-1, 1] range
        torch.testing.assert_close(fast(x), net(x), rtol=0, atol=1e-4)
    # compiled forms keep the resize-convolutions (Inductor fuses the doubling itself)
    assert not any(isinstance(m, PhaseResizeConv2d) for m in compile_layers(net, fast_layers=True).modules())
    assert not any(isinstance(m, PhaseResizeConv2d) for m in net.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_networks_without_resize_convolutions_or_not_run_eagerly_in_float32_are_kept():
    torch.manual_seed(2)
    paper_style = ResnetGenerator(1, 1, ngf=4, n_blocks=1, upsample="transpose").eval()
    assert to_phase_upsample(paper_style) is paper_style
    resize = ResnetGenerator(1, 1, ngf=4, n_blocks=1, upsample="resize").eval()
    assert eager_layers(resize, bf16=True) is resize  # bfloat16 autocast runs the layers as they are
    scripted = torch.jit.script(resize)
    assert eager_layers(scripted) is scripted
