"""Floating-point operations of a network's convolutions, counted from their shapes."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from napari_uspmie.inference.depthwise_sum import DepthwiseSumConv2d
from napari_uspmie.inference.phase_upsample import PhaseResizeConv2d
from napari_uspmie.inference.winograd import TILE, WinogradConv2d

__all__ = ["conv_flops"]


def _winograd_flops(module: WinogradConv2d, output: torch.Tensor) -> int:
    """What Winograd F(4x4, 3x3) runs: the input and output tile transforms and 36 channel products."""
    n, c_out, h, w = output.shape
    tiles = n * -(-h // TILE) * -(-w // TILE)
    c_in = module.in_channels
    return 2 * tiles * (36 * 36 * c_in + 36 * c_in * c_out + 16 * 36 * c_out)


def _layer_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Multiply-adds times two of one (transposed) convolution call."""
    if isinstance(module, WinogradConv2d):
        return _winograd_flops(module, output)
    if isinstance(module, PhaseResizeConv2d):  # one 2x2 convolution, four phases, on the padded input
        n, c, h, w = inputs[0].shape
        return 2 * n * (h + 1) * (w + 1) * math.prod(module.weight.shape)
    if isinstance(module, DepthwiseSumConv2d):  # the same products as the convolution it replaces
        return 2 * output.numel() * module.in_channels * math.prod(module.weight_depthwise.shape[2:])
    weight = module.weight
    per_tap = math.prod(weight.shape[2:])  # kernel samples
    if isinstance(module, nn.ConvTranspose2d):
        # Every input sample is scattered to out_channels x kernel outputs.
        x = inputs[0]
        return 2 * x.shape[0] * math.prod(x.shape[2:]) * weight.shape[0] * weight.shape[1] * per_tap
    # Every output sample gathers in_channels / groups x kernel inputs.
    return 2 * output.numel() * weight.shape[1] * per_tap


def conv_flops(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x multiply-adds) of the convolutions of one forward pass at ``input_shape``.

    Convolutions hold all but a fraction of a percent of a ResNet generator's arithmetic;
    norms, activations and paddings are left out, as matmul-peak comparisons usually do.
    Layers replaced by :class:`WinogradConv2d` count what that algorithm runs (transforms and
    products), and :class:`PhaseResizeConv2d` its 2x2 phase filters, so a rewritten network gives
    the arithmetic actually executed.
    The network runs on the ``meta`` device: shapes only, no arithmetic, no memory.

    Args:
        network: the model (not modified).
        input_shape: ``(B, C, H, W)``.

    Returns:
        The FLOP count.
    """
    meta = copy.deepcopy(network).to("meta")
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_flops(module, inputs, output)

    layers = (nn.Conv2d, nn.ConvTranspose2d, WinogradConv2d, DepthwiseSumConv2d, PhaseResizeConv2d)
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            meta(torch.empty(input_shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total
