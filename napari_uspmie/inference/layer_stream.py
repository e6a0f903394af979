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
activations. :func:`streamable` says whether a network is built only from these.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.models.networks import ResizeConv2d, ResnetBlock, ResnetGenerator

__all__ = ["LayerStream", "streamable", "stream_layers", "convolution_layers"]

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout)
_PADDING = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.ZeroPad2d: "constant"}


def stream_layers(network: nn.Module) -> nn.Module:
    """The module to stream for ``network``: a generator's layer sequence, else ``network`` itself."""
    return network.model if isinstance(network, ResnetGenerator) else network


def convolution_layers(network: nn.Module) -> int:
    """Convolution layers of ``network``: the progress units of streaming one slice."""
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in network.modules())


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
    return isinstance(module, (ResizeConv2d, *_ELEMENTWISE, *_PADDING))


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

    def __call__(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (kept on ``x``'s device)."""
        with torch.no_grad():
            y = self.run(stream_layers(network), x.float())
            return network.finish(x.float(), y) if isinstance(network, ResnetGenerator) else y

    def run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Sequential):
            for layer in module:
                x = self.run(layer, x)
            return x
        if isinstance(module, ResnetBlock):
            return x + self.run(module.conv_block, x)
        if isinstance(module, nn.InstanceNorm2d):
            return self.instance_norm(module, x)
        if isinstance(module, ResizeConv2d):
            up = F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect")
            return self.convolve(up, module.conv.weight, module.conv.bias, 1)
        if isinstance(module, nn.ConvTranspose2d):
            return self.conv_transpose(module, x)
        if isinstance(module, nn.Conv2d):
            ph, pw = module.padding
            if ph or pw:
                mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
                x = F.pad(x, (pw, pw, ph, ph), mode=mode)
            return self.convolve(x, module.weight, module.bias, module.stride[0], module.stride[1], module.dilation)
        for kind, mode in _PADDING.items():
            if isinstance(module, kind):
                return F.pad(x, module.padding, mode=mode)
        if isinstance(module, _ELEMENTWISE):
            return module(x)
        raise TypeError(f"cannot stream {type(module).__name__} layers.")

    def instance_norm(self, module: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        y = (x - mean) * torch.rsqrt(var + module.eps)
        if module.affine:
            y = y * module.weight.to(y)[None, :, None, None] + module.bias.to(y)[None, :, None, None]
        return y

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
    ) -> torch.Tensor:
        """An unpadded convolution of ``x``, computed in bands of output rows on the compute device."""
        stride_w = stride_h if stride_w is None else stride_w
        n, _, h, w = x.shape
        reach_h = dilation[0] * (weight.shape[2] - 1)
        reach_w = dilation[1] * (weight.shape[3] - 1)
        out_h, out_w = (h - reach_h - 1) // stride_h + 1, (w - reach_w - 1) // stride_w + 1
        out = x.new_empty((n, weight.shape[0], out_h, out_w))
        rows = max(1, self.band_elements // max(1, n * weight.shape[0] * out_w))
        weight = weight.to(self.device)
        bias = None if bias is None else bias.to(self.device)
        for a in range(0, out_h, rows):
            b = min(out_h, a + rows)
            band = x[..., a * stride_h : (b - 1) * stride_h + reach_h + 1, :].to(self.device, non_blocking=True)
            with self.autocast():
                y = F.conv2d(band, weight, bias, (stride_h, stride_w), 0, dilation)
            out[..., a:b, :] = y.float().to(out.device)
        self.layer_done()
        return out
