"""Whole-slice results for slices too large for one network call: the network run layer by layer.

Instance normalisation divides every feature map by its mean and spread over the *whole* image,
so a slice enhanced as separate tiles is normalised tile by tile and comes back with brightness
seams at tile borders. :class:`LayerStream` instead runs the generator one layer at a time over
the whole slice: each layer's output is kept on the storage device (the inputs' device, usually
host memory), convolutions run on the compute device in bands of rows with the halo they need,
and instance norms use statistics of the whole feature map. The result is the whole-slice result
(to float rounding) while the compute device only ever holds one band.

Streamable: ``nn.Sequential``, :class:`~napari_uspmie.models.networks.ResnetGenerator` and its
:class:`~napari_uspmie.models.networks.ResnetBlock` and
:class:`~napari_uspmie.models.networks.ResizeConv2d`, ``Conv2d``, ``ConvTranspose2d`` (groups 1,
dilation 1), ``InstanceNorm2d`` without running statistics, padding layers and element-wise
activations, and the CPU's eager rewrites of these (phase-filter resize-convolutions, depthwise +
sum convolutions); a compiled library is streamed through its eager network.
:func:`streamable` says whether a network is built only from these.

Memory: the whole-slice maps stay on the storage device; padding is done band by band, a
resize-convolution runs as phase filters into its output (the doubled input is never built), and
instance norms normalise in place the maps no later layer needs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.inference.depthwise_sum import DepthwiseSumConv2d
from napari_uspmie.inference.phase_upsample import PhaseResizeConv2d, phase_weight, place_phases
from napari_uspmie.models.networks import ResizeConv2d, ResnetBlock, ResnetGenerator

__all__ = ["LayerStream", "streamable", "stream_layers", "convolution_layers"]

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout)
_PADDING = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.ZeroPad2d: "constant"}


def eager_of(network: nn.Module) -> nn.Module:
    """The eager module behind ``network``: what a compiled library keeps as ``eager_network``
    (:class:`napari_uspmie.inference.compiled_cache.CompiledGenerator`), else ``network`` itself."""
    eager = getattr(network, "eager_network", None)
    return eager if isinstance(eager, nn.Module) else network


def stream_layers(network: nn.Module) -> nn.Module:
    """The module to stream for ``network``: a generator's layer sequence, else the eager module itself."""
    network = eager_of(network)
    return network.model if isinstance(network, ResnetGenerator) else network


def convolution_layers(network: nn.Module) -> int:
    """Convolution layers of ``network``: the progress units of streaming one slice."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, PhaseResizeConv2d, DepthwiseSumConv2d)
    return sum(isinstance(m, layers) for m in eager_of(network).modules())


def _conv_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, tuple, tuple, tuple] | None:
    """``(weight, bias, stride, padding, dilation)`` of a dense 2D convolution layer (a depthwise + sum
    layer is one: its filters are the convolution's), else ``None``."""
    if type(module) is nn.Conv2d and module.groups == 1:
        return module.weight, module.bias, module.stride, module.padding, module.dilation
    if isinstance(module, DepthwiseSumConv2d):
        weight = module.weight_depthwise.transpose(0, 1)
        return weight, module.bias, module.stride, module.padding, module.dilation
    return None


def streamable(network: nn.Module) -> bool:
    """Whether :class:`LayerStream` can run ``network`` (see the module docstring)."""
    module = stream_layers(network)
    if isinstance(module, nn.Sequential):
        return all(streamable(m) for m in module)
    if isinstance(module, ResnetBlock):
        return streamable(module.conv_block)
    if isinstance(module, nn.InstanceNorm2d):
        return not module.track_running_stats
    if isinstance(module, nn.ConvTranspose2d):
        return module.groups == 1 and module.dilation == (1, 1) and module.padding_mode == "zeros"
    if isinstance(module, nn.Conv2d):
        return module.padding_mode in ("zeros", "reflect", "replicate") and isinstance(module.padding, tuple)
    if isinstance(module, DepthwiseSumConv2d):
        return isinstance(module.padding, tuple)
    return isinstance(module, (ResizeConv2d, PhaseResizeConv2d, *_ELEMENTWISE, *_PADDING))


def _pads_in_bands(width: int, mode: str, weight: torch.Tensor, dilation: tuple) -> bool:
    """Whether padding by ``width`` in ``mode`` can be done band by band for a convolution by
    ``weight``: zeros always; reflect and replicate when the kernel reaches ``2 width`` samples each
    way, so each band holds the rows its padding copies."""
    reach = min(d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True))
    return mode == "constant" or 2 * width <= reach


def _band_padding(layer: nn.Module, following: nn.Module | None) -> tuple[int, str] | None:
    """``(p, mode)`` when ``layer`` pads every side by ``p`` and ``following`` is an unpadded
    convolution that can take that padding band by band (:func:`_pads_in_bands`); else ``None``."""
    mode = next((m for kind, m in _PADDING.items() if isinstance(layer, kind)), None)
    parts = None if following is None else _conv_parts(following)
    if mode is None or parts is None or tuple(parts[3]) != (0, 0):
        return None
    widths = set(layer.padding)
    width = widths.pop() if len(widths) == 1 else 0
    return (width, mode) if width > 0 and _pads_in_bands(width, mode, parts[0], parts[4]) else None


class LayerStream:
    """Run a streamable network over whole ``(N, C, H, W)`` tensors, convolutions in row bands.

    Args:
        device: where convolutions run.
        band_elements: output elements (channels x pixels) per convolution call, at most.
        autocast: context manager factory for the compute (precision), e.g. ``nullcontext``.
        layer_done: called after each convolution layer (progress; raising there cancels).
    """

    def __init__(
        self,
        device: torch.device,
        band_elements: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        layer_done: Callable[[], None] = lambda: None,
    ) -> None:
        self.device = device
        self.band_elements = max(int(band_elements), 1)
        self.autocast = autocast
        self.layer_done = layer_done
        self._kept: set[int] = set()

    def __call__(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (kept on ``x``'s device)."""
        with torch.no_grad():
            x = x.float()
            # maps a layer may overwrite: any but the input and the residual blocks' inputs
            self._kept = {id(x)}
            y = self.run(stream_layers(network), x)
            network = eager_of(network)
            return network.finish(x, y) if isinstance(network, ResnetGenerator) else y

    def run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Sequential):
            layers = list(module)
            i = 0
            while i < len(layers):
                pad = _band_padding(layers[i], layers[i + 1] if i + 1 < len(layers) else None)
                if pad is not None:  # the padded whole map is never held: each band is padded on its own
                    weight, bias, stride, _, dilation = _conv_parts(layers[i + 1])
                    x = self.convolve(x, weight, bias, *stride, dilation, pad=pad)
                    i += 2
                    continue
                x = self.run(layers[i], x)
                i += 1
            return x
        if isinstance(module, ResnetBlock):
            self._kept.add(id(x))
            return self.run(module.conv_block, x).add_(x)
        if isinstance(module, nn.InstanceNorm2d):
            return self.instance_norm(module, x)
        if isinstance(module, ResizeConv2d):
            conv = module.conv
            bias = None if conv.bias is None else conv.bias.detach().repeat(4)
            return self.resize_convolve(phase_weight(conv.weight), bias, x)
        if isinstance(module, PhaseResizeConv2d):
            return self.resize_convolve(module.weight, module.bias, x)
        if isinstance(module, DepthwiseSumConv2d):
            weight, bias, stride, (ph, pw), dilation = _conv_parts(module)
            x = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
            return self.convolve(x, weight, bias, *stride, dilation)
        if isinstance(module, nn.ConvTranspose2d):
            return self.conv_transpose(module, x)
        if isinstance(module, nn.Conv2d):
            ph, pw = module.padding
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            stride_h, stride_w = module.stride
            if ph == pw and _pads_in_bands(ph, mode, module.weight, module.dilation):
                pad = (ph, mode) if ph else None  # each band padded on its own
                return self.convolve(x, module.weight, module.bias, stride_h, stride_w, module.dilation, pad=pad)
            x = F.pad(x, (pw, pw, ph, ph), mode=mode)
            return self.convolve(x, module.weight, module.bias, stride_h, stride_w, module.dilation)
        for kind, mode in _PADDING.items():
            if isinstance(module, kind):
                return F.pad(x, module.padding, mode=mode)
        if isinstance(module, _ELEMENTWISE):
            return module(x)
        raise TypeError(f"cannot stream {type(module).__name__} layers.")

    def instance_norm(self, module: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        # a whole-slice map is large: normalised where it lies unless another layer still needs it
        y = x.sub_(mean) if id(x) not in self._kept else x - mean
        y.mul_(torch.rsqrt(var + module.eps))
        if module.affine:
            y.mul_(module.weight.to(y)[None, :, None, None]).add_(module.bias.to(y)[None, :, None, None])
        return y

    def resize_convolve(self, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """A resize-convolution of ``x`` by its four phase filters ``weight`` (``(4 O, I, 2, 2)``,
        :func:`napari_uspmie.inference.phase_upsample.phase_weight`; ``bias`` repeated per phase), in
        bands of rows written straight into their places of the doubled output: the doubled input,
        four times the size of ``x``, is never held."""
        o = weight.shape[0] // 4
        n, _, h, w = x.shape
        weight = weight.to(self.device)
        bias = None if bias is None else bias.to(self.device)
        out = x.new_empty((n, o, 2 * h, 2 * w))
        rows = max(1, self.band_elements // max(1, n * 4 * o * (w + 1)))
        for a in range(0, h + 1, rows):
            b = min(h + 1, a + rows)
            # rows a - 1 .. b - 1 of x, replicated past its ends (the replicate-padded map's rows a .. b)
            lo, hi = max(0, a - 1), min(h, b)
            band = F.pad(x[..., lo:hi, :], (1, 1, lo - (a - 1), b - hi), mode="replicate")
            band = band.to(self.device, non_blocking=True)
            with self.autocast():
                y = F.conv2d(band, weight, bias)
            place_phases(y.float().to(out.device), out, a)
        self.layer_done()
        return out

    def conv_transpose(self, module: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
        # a transposed convolution is a convolution of the zero-interleaved input with the flipped kernel
        (sh, sw), (kh, kw) = module.stride, module.kernel_size
        (ph, pw), (oh, ow) = module.padding, module.output_padding
        n, c, h, w = x.shape
        spread = x.new_zeros((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1))
        spread[..., ::sh, ::sw] = x
        spread = F.pad(spread, (kw - 1 - pw, kw - 1 - pw + ow, kh - 1 - ph, kh - 1 - ph + oh))
        weight = module.weight.flip(2, 3).transpose(0, 1)
        return self.convolve(spread, weight, module.bias, 1)

    def convolve(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride_h: int,
        stride_w: int | None = None,
        dilation: tuple[int, int] = (1, 1),
        pad: tuple[int, str] | None = None,
    ) -> torch.Tensor:
        """A convolution of ``x``, computed in bands of output rows on the compute device.

        ``pad``: ``(p, mode)``, every side of ``x`` padded by ``p`` (``F.pad`` modes), band by band
        (:func:`_pads_in_bands` says when that is the padded map's convolution).
        """
        stride_w = stride_h if stride_w is None else stride_w
        n, _, h, w = x.shape
        width, mode = pad if pad is not None else (0, "constant")
        h, w = h + 2 * width, w + 2 * width  # the padded map's size
        reach_h = dilation[0] * (weight.shape[2] - 1)
        reach_w = dilation[1] * (weight.shape[3] - 1)
        out_h, out_w = (h - reach_h - 1) // stride_h + 1, (w - reach_w - 1) // stride_w + 1
        out = x.new_empty((n, weight.shape[0], out_h, out_w))
        rows = max(1, self.band_elements // max(1, n * weight.shape[0] * out_w))
        weight = weight.to(self.device)
        bias = None if bias is None else bias.to(self.device)
        for a in range(0, out_h, rows):
            b = min(out_h, a + rows)
            top, bottom = a * stride_h, (b - 1) * stride_h + reach_h + 1  # rows of the padded map
            if width:
                # rows top - width .. bottom - width of x, the missing ones made by the padding mode
                lo, hi = max(0, top - width), min(h - 2 * width, bottom - width)
                band = F.pad(x[..., lo:hi, :], (width, width, lo - (top - width), (bottom - width) - hi), mode=mode)
            else:
                band = x[..., top:bottom, :]
            band = band.to(self.device, non_blocking=True)
            with self.autocast():
                y = F.conv2d(band, weight, bias, (stride_h, stride_w), 0, dilation)
            out[..., a:b, :] = y.float().to(out.device)
        self.layer_done()
        return out
