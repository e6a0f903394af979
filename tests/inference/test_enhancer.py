"""Enhancer: layouts, intensity round trip, colour adaptation, tiling, progress/cancel, weight loading."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from napari_uspmie import lassim, load_enhancer
from napari_uspmie.errors import CheckpointError, EnhancementCancelled, InvalidImageError
from napari_uspmie.inference.channels import ChannelAdapter
from napari_uspmie.inference.checkpoint import infer_architecture
from napari_uspmie.inference.compilation import compile_layers, compile_network
from napari_uspmie.inference.depthwise_sum import DepthwiseSumConv2d
from napari_uspmie.inference.enhancer import Enhancer, pick_device
from napari_uspmie.inference.inferer import MAX_PIXELS, EnhancementInferer, pixels_per_call
from napari_uspmie.inference.layer_stream import convolution_layers
from napari_uspmie.inference.precision import autocast_for, cpu_bf16_flags
from napari_uspmie.inference.winograd import WinogradConv2d
from napari_uspmie.io.intensity import IntensityMap, intensity_window, percentiles_of
from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.models.networks import ResnetBlock, ResnetGenerator
from tests.io_factories import ct_volume, mni_slices, random_bundle
from tests.unpaired_data import TINY_GENERATOR as TINY


class Identity(nn.Module):
    """A 'network' returning its input: the whole pipeline must then return the input exactly."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.in_channels = self.out_channels = channels

    def forward(self, x):
        return x


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Enhancer(ResnetGenerator(**TINY), device="cpu", tile_size=64, batch_size=4)


def test_identity_round_trip_is_exact():
    """Intensity mapping there and back, with clipped tails restored, returns the input unchanged."""
    enh = Enhancer(Identity(), device="cpu", tile_size=64)
    ct = ct_volume(3)
    ct[0, 0, 0] = 3000  # a bright outlier far beyond the 99.5th percentile
    np.testing.assert_array_equal(enh.enhance(ct), ct)
    camera = data.camera()
    np.testing.assert_array_equal(enh.enhance(camera), camera)
    floats = np.random.default_rng(0).normal(size=(70, 90)).astype(np.float32)
    np.testing.assert_allclose(enh.enhance(floats), floats, atol=1e-5)


@pytest.mark.parametrize(
    "shape,dtype,kwargs",
    [
        ((64, 48), np.uint8, {}),
        ((40, 52, 3), np.uint8, {}),
        ((40, 52, 4), np.uint8, {}),
        ((5, 36, 44), np.int16, {}),
        ((36, 5, 44), np.int16, {"slice_axis": 1}),
        ((3, 30, 40), np.uint16, {"channel_axis": 0}),
        ((4, 30, 40, 3), np.float32, {}),
        ((3, 3), np.uint16, {}),
    ],
)
def test_shapes_dtypes_and_ranges(tiny, shape, dtype, kwargs):
    rng = np.random.default_rng(1)
    hi = 255 if dtype == np.uint8 else 4000
    x = (rng.random(shape) * hi).astype(dtype)
    y = tiny.enhance(x, **kwargs)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= x.min() and y.max() <= x.max()
    if shape[-1] == 4 and dtype == np.uint8:
        np.testing.assert_array_equal(y[..., 3], x[..., 3])  # alpha untouched


def test_slice_axis_is_slice_by_slice(tiny):
    vol = ct_volume(4)
    along0 = tiny.enhance(vol)
    along1 = tiny.enhance(np.ascontiguousarray(vol.transpose(1, 0, 2)), slice_axis=1)
    np.testing.assert_array_equal(along1.transpose(1, 0, 2), along0)
    one = tiny.enhance(vol[2])  # a slice alone gives the same result (same window: fit on the volume differs)
    assert one.shape == vol[2].shape


def test_grey_model_on_rgb_keeps_chroma():
    torch.manual_seed(0)
    adapter = ChannelAdapter(ResnetGenerator(**TINY).eval(), 3)
    x = torch.rand(2, 3, 32, 32) * 1.2 - 0.6
    with torch.no_grad():
        y = adapter(x)
    w = torch.tensor(GRAY_WEIGHTS).reshape(1, 3, 1, 1)
    luma_x, luma_y = (x * w).sum(1, keepdim=True), (y * w).sum(1, keepdim=True)
    inside = (y.abs() < 1).all(1, keepdim=True).expand_as(y)
    torch.testing.assert_close((y - luma_y)[inside], (x - luma_x)[inside], atol=1e-5, rtol=0)
    assert not torch.allclose(luma_x, luma_y)


def test_rgb_model_on_grey_image():
    torch.manual_seed(0)
    enh = Enhancer(ResnetGenerator(3, 3, ngf=8, n_blocks=1), device="cpu")
    grey = data.camera()[::8, ::8]
    out = enh.enhance(grey)
    assert out.shape == grey.shape and out.dtype == np.uint8


def test_tiled_equals_whole_for_local_model():
    """Sliding windows (networks that cannot be streamed) reproduce whole-image inference for a small
    receptive field."""
    torch.manual_seed(0)
    net = ResnetGenerator(1, 1, ngf=8, n_blocks=1, norm="none", init_gain=0.1)
    x = torch.from_numpy(data.camera()[:200, :232].astype(np.float32) / 127.5 - 1)[None, None]
    whole = EnhancementInferer(tile_size=256)(x, net.eval())
    tiled = EnhancementInferer(tile_size=96, overlap=0.5, stream=False)(x, net)
    assert tiled.shape == whole.shape
    diff = (tiled - whole).abs()
    # windows differ only near their borders, which the Gaussian weights play down (MONAI floors the
    # weights at 1e-3, so on the image's own border a window edge still counts a little)
    assert diff.mean() < 2e-3 and diff.quantile(0.99) < 0.03 and diff.max() < 0.15
    assert whole.abs().max() > 0.3


def test_tiling_progress_and_cancel(tiny):
    image = data.camera()[:200, :200]
    calls = []
    tiny.enhance(image, tile_size=64, progress=lambda done, total: calls.append((done, total)))
    total = EnhancementInferer(tile_size=64).steps((1, 1, 200, 200), layers=convolution_layers(tiny.network))
    assert total > 4 and calls[0] == (0, total) and calls[-1][0] == total
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))

    with pytest.raises(EnhancementCancelled):
        tiny.enhance(image, tile_size=64, progress=lambda done, total: done < 4)
    event = threading.Event()
    event.set()
    with pytest.raises(EnhancementCancelled):
        tiny.enhance(ct_volume(3), cancel=event)


def test_pixels_per_call_are_bounded():
    """Large slices or windows shrink the batch (down to one), so memory does not grow with batch_size."""
    inferer = EnhancementInferer(tile_size=1024, batch_size=8, max_pixels=2**21)
    assert (
        inferer.images_per_call(256 * 256) == 8
        and inferer.images_per_call(1024 * 1024) == 2
        and inferer.images_per_call(4096**2) == 1
    )


def test_cpu_calls_are_cache_sized_from_the_first_convolution():
    """On a CPU the first convolution's output (8 MiB of float32 eager, 16 compiled) sets the pixels per call."""
    narrow = ResnetGenerator(1, 1, ngf=16, n_blocks=1)
    paper = ResnetGenerator(3, 3, ngf=64, n_blocks=1)
    assert pixels_per_call(narrow, "cpu") == 2**17 and pixels_per_call(paper, "cpu") == 2**15
    assert pixels_per_call(ChannelAdapter(paper, 1), "cpu") == 2**15
    assert pixels_per_call(torch.jit.trace(paper.eval(), torch.rand(1, 3, 32, 32)), "cpu") == 2**15
    compiled = compile_network(paper, fast_layers=False)  # compiles only when called
    assert pixels_per_call(compiled, "cpu") == 2**16 and pixels_per_call(ChannelAdapter(compiled, 1), "cpu") == 2**16
    assert pixels_per_call(paper, "cuda") == MAX_PIXELS
    assert pixels_per_call(Identity(), "cpu") == MAX_PIXELS
    assert pixels_per_call(nn.Conv2d(1, 4096, 1), "cpu") == 128 * 128


class CallCounter(nn.Module):
    """Counts network calls and the images they held."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.batches = network, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.network(x)


def test_cache_sized_calls_give_the_same_images():
    """8 slices of 128x128 through a 64-channel stem: four calls of 2 on a CPU, one call with max_pixels."""
    torch.manual_seed(0)
    counted = CallCounter(ResnetGenerator(1, 1, ngf=64, n_blocks=1).eval())
    x = torch.rand(8, 1, 128, 128) * 2 - 1
    auto = EnhancementInferer(batch_size=8)(x, counted)
    assert counted.batches == [2, 2, 2, 2]
    counted.batches.clear()
    one_call = EnhancementInferer(batch_size=8, max_pixels=2**21)(x, counted)
    assert counted.batches == [8]
    torch.testing.assert_close(auto, one_call, rtol=0, atol=1e-5)


def test_bad_inputs(tiny):
    with pytest.raises(InvalidImageError, match="NaN/Inf"):
        tiny.enhance(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32))
    with pytest.raises(InvalidImageError, match="shape"):
        tiny.enhance(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(InvalidImageError, match="5-channel"):
        tiny.enhance(np.zeros((10, 10, 5)), channel_axis=-1)
    with pytest.raises(InvalidImageError, match="dtype"):
        tiny.enhance(np.array([["a"]]))


def test_intensity_window():
    """8-bit: full range (as the paper's photographs); others: robust percentiles (training uses the same function)."""
    assert intensity_window(data.camera()) == (0.0, 255.0)
    ct = ct_volume(2)
    assert intensity_window(ct) == pytest.approx(tuple(np.percentile(ct, [0.5, 99.5])))
    assert intensity_window(ct.astype(np.float32), dtype="uint8") == (0.0, 255.0)
    assert intensity_window(np.full((5, 5), 7, np.int16)) == (6.0, 8.0)  # constant: widened, no division by 0
    nan = np.array([np.nan, 1.0, 2.0, 3.0], np.float32)
    assert np.isfinite(intensity_window(nan)).all()
    mapping = IntensityMap.fit(ct)
    assert (mapping.vmin, mapping.vmax, mapping.dtype) == (ct.min(), ct.max(), "int16")


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.uint8])
def test_percentiles_from_histogram_equal_numpy(dtype):
    """Integer data: percentiles read from a histogram equal ``np.percentile`` of the same values in int64
    (numpy on int16 itself overflows interpolating across a range wider than 32767); wide ranges and floats
    go to ``np.percentile``."""
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize))
    info = np.iinfo(dtype)
    lo, hi = (max(info.min, -(1 << 20)), min(info.max, 1 << 20))
    for n in (1, 2, 5, 1000, 100_000):
        values = rng.integers(lo, hi, n, endpoint=True).astype(dtype)
        for qs in ((0.5, 99.5), (0.0, 100.0), (50.0, 12.5)):
            expected = np.percentile(values.astype(np.int64), qs)
            np.testing.assert_allclose(percentiles_of(values, qs), expected, rtol=1e-12, atol=1e-9)
    floats = rng.random(1000)
    assert percentiles_of(floats, (10, 90)) == tuple(np.percentile(floats, (10, 90)))


def test_load_enhancer_checkpoint_layouts(tmp_path):
    bundle = random_bundle(tmp_path / "bundle", TINY)
    enh = load_enhancer(bundle, device="cpu")
    assert enh.architecture == TINY and enh.device == torch.device("cpu")
    assert enh.tile_size == json.loads((bundle / "configs" / "inference.json").read_text())["tile_size"]
    reference = enh.enhance(data.camera()[:64, :64])

    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    wide = {"in_channels": 1, "out_channels": 1, "ngf": 12, "n_blocks": 3, "norm": "instance"}
    trainer = ResnetGenerator(**wide).state_dict()
    torch.save({"generator_ab": trainer, "network_def_kwargs": wide, "epoch": 3}, tmp_path / "checkpoint_epoch=3.pt")
    torch.save({"model": state}, tmp_path / "monailabel.pt")
    (tmp_path / "bare").mkdir()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "bare" / "model.pt")  # DDP, no config
    assert load_enhancer(checkpoint=tmp_path / "checkpoint_epoch=3.pt").architecture == wide
    np.testing.assert_array_equal(load_enhancer(checkpoint=tmp_path / "monailabel.pt").enhance(data.camera()[:64, :64]),
                                  reference)  # fmt: skip
    assert load_enhancer(checkpoint=tmp_path / "bare").architecture == infer_architecture(state) == TINY

    (tmp_path / "bare" / "model_config.json").write_text(json.dumps(wide))
    with pytest.raises(CheckpointError, match="do not fit.*the weights look like.*'ngf': 8"):
        load_enhancer(checkpoint=tmp_path / "bare")
    (tmp_path / "bare" / "model_config.json").unlink()
    key = next(k for k in state if k.endswith("conv_block.5.weight"))  # a block's second 3x3 made 1x1
    torch.save({**state, key: state[key][..., 1:2, 1:2].clone()}, tmp_path / "bare" / "model.pt")
    with pytest.raises(CheckpointError, match=rf"size mismatch for {re.escape(key)}.*damaged or holds another"):
        load_enhancer(checkpoint=tmp_path / "bare")
    with pytest.raises(CheckpointError, match="no trained weights"):
        (bundle / "models" / "model.pt").unlink()
        load_enhancer(bundle)
    scripted = torch.jit.script(ResnetGenerator(**TINY).eval())
    scripted.save(str(bundle / "models" / "model.ts"))
    assert load_enhancer(bundle).enhance(data.camera()[:32, :32]).shape == (32, 32)


def test_pick_device():
    from napari_uspmie.errors import DeviceError

    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        pick_device("tpu")
    with pytest.raises(DeviceError, match="use auto, cpu"):
        pick_device("xla")
    if not torch.cuda.is_available():  # the refusal a CPU machine gives
        with pytest.raises(DeviceError, match="no CUDA GPU is available here"):
            pick_device("cuda:1")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type in (expected, "mps")


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU builds C++ kernels with g++")
def test_compiled_network_matches_eager():
    """``compile=True`` (Inductor, frozen weights, Winograd 3x3 convolutions) against the eager fp32 network:
    1e-3 on [-1, 1] outputs and on the enhanced image in its own units
    (8-bit: at most one grey level, from rounding)."""
    torch.manual_seed(0)
    net = ResnetGenerator(**TINY).eval()
    eager = Enhancer(net, device="cpu", tile_size=64)
    compiled = Enhancer(net, device="cpu", tile_size=64, compile=True)
    x = torch.rand(2, 1, 48, 40) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(compiled.runner(x), net(x), rtol=0, atol=1e-3)
    floats = np.random.default_rng(2).random((2, 48, 40)).astype(np.float32)
    np.testing.assert_allclose(compiled.enhance(floats), eager.enhance(floats), rtol=0, atol=1e-3)
    # float32 on CPU: the head as depthwise + sum; Winograd F(4x4, 3x3) only from 128 channels, so not in
    # this narrow network; under bf16 the layers stay as they are.
    assert any(isinstance(m, DepthwiseSumConv2d) for m in compiled.compiled_from.modules())
    assert not any(isinstance(m, WinogradConv2d) for m in compiled.compiled_from.modules())
    bf16 = Enhancer(net, device="cpu", tile_size=64, compile=True, bf16=True)
    assert not any(isinstance(m, DepthwiseSumConv2d) for m in bf16.compiled_from.modules())
    assert not any(isinstance(m, (WinogradConv2d, DepthwiseSumConv2d)) for m in net.modules())
    scripted = torch.jit.script(ResnetGenerator(**TINY).eval())
    assert Enhancer(scripted, device="cpu", compile=True).runner is scripted  # TorchScript runs as it is


def test_compiled_winograd_layers_from_128_channels_match_eager():
    """A residual block 128 channels wide is compiled with Winograd F(4x4, 3x3) (64-channel layers are not)
    and matches the eager block."""
    torch.manual_seed(0)
    block = ResnetBlock(128, "instance").eval()
    narrow = compile_layers(ResnetBlock(64, "instance").eval())
    assert not any(isinstance(m, WinogradConv2d) for m in narrow.modules())
    compiled = compile_network(block)
    assert sum(isinstance(m, WinogradConv2d) for m in compile_layers(block).modules()) == 2
    x = torch.randn(1, 128, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), block(x), rtol=0, atol=1e-3)


def test_autocast_choice_per_device():
    """float32 stays the default; ``amp`` is float16 on CUDA only; ``bf16`` is bfloat16 on CPU and CUDA."""
    conv = nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 8, 8)
    cpu = torch.device("cpu")
    for amp, bf16, dtype in ((True, False, torch.float32), (False, False, torch.float32), (True, True, torch.bfloat16)):
        with torch.no_grad(), autocast_for(cpu, amp=amp, bf16=bf16):
            assert conv(x).dtype == dtype
    assert isinstance(autocast_for(torch.device("mps"), amp=True, bf16=True), contextlib.nullcontext)
    cuda = autocast_for(torch.device("cuda"), amp=True)
    assert isinstance(cuda, torch.autocast) and cuda.fast_dtype == torch.float16
    assert autocast_for(torch.device("cuda"), amp=True, bf16=True).fast_dtype == torch.bfloat16


def test_cpu_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 avx512_bf16\n\nflags : sse\n")
    assert cpu_bf16_flags(str(info)) == ("amx_bf16", "avx512_bf16")
    info2 = tmp_path / "cpuinfo2"
    info2.write_text("flags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_bf16_flags(str(info2)) == ()
    assert cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_bf16_enhancement_is_close_to_float32():
    """The shipped model on brain MRI slices: bfloat16 really runs (outputs differ) and stays within a
    grey level on average of float32, with the structure kept (LaSSIM between the two near 1)."""
    slices = mni_slices(4, 1)[:, 20:-20, 20:-20]
    fp32 = load_enhancer(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # machines without bf16 hardware warn about speed, not results
        bf16 = load_enhancer(device="cpu", bf16=True)
    assert "bf16" in repr(bf16)
    a = fp32.enhance(slices).astype(np.float64)
    b = bf16.enhance(slices).astype(np.float64)
    diff = np.abs(a - b)
    assert diff.max() > 0  # bfloat16 was used
    assert diff.mean() < 0.3 and diff.max() <= 16
    assert float(lassim(torch.from_numpy(a[:, None] / 255), torch.from_numpy(b[:, None] / 255)).mean()) > 0.999


class Constant(Identity):
    """A broken 'network': one value everywhere, whatever the input."""

    def forward(self, x):
        return torch.full_like(x, -1.0)


def test_a_flat_output_from_an_image_with_structure_is_refused():
    with pytest.raises(InvalidImageError, match="turned an image with structure into a flat one"):
        Enhancer(Constant(), device="cpu").enhance(mni_slices(1, 1)[0])
    flat = np.full((32, 32), 7, np.uint8)  # no structure to lose: a flat output is the right one
    assert np.array_equal(Enhancer(Constant(), device="cpu").enhance(flat), flat)
