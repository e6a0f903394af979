"""Large slices streamed layer by layer give the whole-slice result: no tile seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from torch import nn

from napari_uspmie.inference.compilation import eager_layers
from napari_uspmie.inference.enhancer import Enhancer
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.inference.layer_stream import LayerStream, convolution_layers, streamable
from napari_uspmie.models.networks import ResizeConv2d, ResnetBlock, ResnetGenerator


def _trained_like(net: nn.Module) -> nn.Module:
    # init_gain 0.02 gives near-constant outputs; larger weights make instance-norm statistics matter
    torch.manual_seed(0)
    for p in net.parameters():
        if p.ndim == 4:
            nn.init.normal_(p, 0.0, 0.2)
    return net.eval()


def _camera(size: int) -> torch.Tensor:
    image = ndimage.zoom(data.camera().astype(np.float32) / 127.5 - 1, size / 512, order=1)
    return torch.from_numpy(image)[None, None]


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_streamed_equals_whole_and_windows_do_not(upsample):
    net = _trained_like(ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample=upsample))
    x = _camera(384)
    whole = EnhancementInferer(tile_size=384)(x, net)
    streamed = EnhancementInferer(tile_size=96)(x, net)
    windows = EnhancementInferer(tile_size=96, stream=False)(x, net)
    grey = lambda a, b: float((a - b).abs().max() * 127.5)  # noqa: E731  in 8-bit grey levels
    assert grey(streamed, whole) < 0.05
    # each window normalised on its own: the seams the streaming removes
    assert grey(windows, whole) > 5
    assert whole.std() > 0.1


def test_2048_pixel_slice_streams_to_the_whole_slice_result_within_a_grey_level():
    net = _trained_like(ResnetGenerator(1, 1, ngf=4, n_blocks=1, upsample="resize"))
    x = _camera(2048)
    whole = EnhancementInferer(tile_size=2048)(x, net)
    streamed = EnhancementInferer(tile_size=1024)(x, net)
    diff = (streamed - whole).abs() * 127.5
    assert streamed.shape == whole.shape == x.shape and float(diff.max()) < 1.0


def test_streaming_runs_colour_adapters_batches_and_odd_sizes():
    grey_net = _trained_like(ResnetGenerator(1, 1, ngf=4, n_blocks=1))
    rgb = torch.stack([_camera(200)[0, 0][:, :190] * s for s in (1.0, 0.8, 0.5)])[None]
    whole = EnhancementInferer(tile_size=256)(rgb, grey_net)
    streamed = EnhancementInferer(tile_size=64)(rgb, grey_net)
    assert streamed.shape == rgb.shape and float((streamed - whole).abs().max()) < 1e-3

    volume = torch.stack([_camera(136)[0, 0][:130, :98] * s for s in (1.0, -0.5, 0.3)])[None, None]
    whole = EnhancementInferer(tile_size=256)(volume, grey_net)
    streamed = EnhancementInferer(tile_size=64)(volume, grey_net)
    assert streamed.shape == volume.shape and float((streamed - whole).abs().max()) < 1e-3


def test_enhancer_streams_the_eager_network_and_reports_progress_per_layer():
    net = _trained_like(ResnetGenerator(1, 1, ngf=4, n_blocks=1))
    enhancer = Enhancer(net, device="cpu", tile_size=64)
    image = (data.camera()[:180, :200]).copy()
    calls = []
    tiled = enhancer.enhance(image, progress=lambda done, total: calls.append((done, total)))
    whole = Enhancer(net, device="cpu", tile_size=256).enhance(image)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    layers = convolution_layers(net)
    assert calls[0] == (0, layers) and calls[-1] == (layers, layers)


def test_what_can_be_streamed():
    assert streamable(ResnetGenerator(3, 3, ngf=4, n_blocks=1, norm="instance"))
    assert not streamable(ResnetGenerator(1, 1, ngf=4, n_blocks=1, norm="batch"))  # falls back to windows
    assert not streamable(nn.Sequential(nn.Conv2d(1, 1, 3, padding="same")))
    with pytest.raises(TypeError, match="cannot stream BatchNorm2d"):
        LayerStream(torch.device("cpu"), 1024)(nn.Sequential(nn.BatchNorm2d(1)), torch.zeros(1, 1, 8, 8))


def test_band_size_does_not_change_the_result():
    net = _trained_like(ResnetGenerator(1, 1, ngf=4, n_blocks=1))
    x = _camera(128)
    one_row = LayerStream(torch.device("cpu"), band_elements=1)(net, x)
    whole = LayerStream(torch.device("cpu"), band_elements=2**30)(net, x)
    with torch.no_grad():
        direct = net(x)
    assert float((one_row - direct).abs().max()) < 1e-4 and float((whole - direct).abs().max()) < 1e-4


@pytest.mark.parametrize("band_elements", [1, 700, 2**30])
def test_resize_convolutions_stream_by_phase_bands_to_the_layer_result(band_elements):
    # bands of one row, of a few rows, and all rows: every output row lands in its place, borders included
    torch.manual_seed(3)
    layer = ResizeConv2d(3, 5).eval()
    x = torch.randn(2, 3, 7, 9)
    with torch.no_grad():
        want = layer(x)
    got = LayerStream(torch.device("cpu"), band_elements=band_elements)(nn.Sequential(layer), x)
    assert got.shape == want.shape == (2, 5, 14, 18)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_streaming_leaves_its_input_and_residual_inputs_as_they_were():
    # norms normalise in place only maps no other layer needs: not the input, not a residual block's input
    torch.manual_seed(4)
    net = nn.Sequential(nn.InstanceNorm2d(2), nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3), nn.InstanceNorm2d(2)).eval()
    x = torch.randn(1, 2, 12, 10) * 3 + 1
    before = x.clone()
    with torch.no_grad():
        want = net(x)
    got = LayerStream(torch.device("cpu"), band_elements=16)(net, x)
    assert torch.equal(x, before)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    block = ResnetBlock(2).eval()
    with torch.no_grad():
        want = block(x)
    got = LayerStream(torch.device("cpu"), band_elements=16)(nn.Sequential(block), x)
    assert torch.equal(x, before)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_cpu_eager_rewrites_stream_like_the_network():
    # what the default CPU path runs (phase-filter upsampling, depthwise + sum head) streams to the same result
    net = _trained_like(ResnetGenerator(1, 1, ngf=4, n_blocks=1, upsample="resize", residual=True))
    fast = eager_layers(net)
    assert fast is not net and streamable(fast) and convolution_layers(fast) == convolution_layers(net)
    x = _camera(160)
    whole = EnhancementInferer(tile_size=160)(x, net)
    streamed = EnhancementInferer(tile_size=64)(x, fast)
    assert float((streamed - whole).abs().max() * 127.5) < 0.05
