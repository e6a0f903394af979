"""Floating-point operations of a network's convolutions, counted from their shapes."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["conv_flops"]


def _layer_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Multiply-adds times two of one (transposed) convolution call."""
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

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            meta(torch.empty(input_shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total
