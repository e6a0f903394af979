"""Resize-convolutions computed at the low resolution: four 2x2 phase filters instead of a 3x3 on a 2x image.

:class:`napari_uspmie.models.networks.ResizeConv2d` doubles an image by nearest-neighbour
copying, pads it by reflection and convolves it with a 3x3 filter. Along one axis, output
``2i`` then reads low-resolution samples ``i - 1, i, i`` and output ``2i + 1`` reads
``i, i, i + 1``: each output phase is a 2-tap filter on the low-resolution image, whose taps are
sums of the 3x3 filter's. So the layer is one 2x2 convolution with four times the output
channels (one group per phase) on the low-resolution image, its phases interleaved after:
2.25x fewer multiplications and a quarter of the input read, the same arithmetic up to the
order of additions (results agree with the layer to float32 rounding, about 1e-6).

Borders: the reflection pad of the doubled image repeats its first and last low-resolution
samples, which is a replicate pad of the low-resolution image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.inference.layer_rewrite import replace_layers
from napari_uspmie.models.networks import ResizeConv2d

__all__ = ["PhaseResizeConv2d", "phase_weight", "place_phases", "to_phase_upsample"]

# For output phase p (0: even, 1: odd) along one axis, the weight of 3x3 tap k on 2x2 tap a.
# Phase 0 reads low-resolution samples (i - 1, i): tap 0 on the first, taps 1 and 2 on the second;
# phase 1 reads (i, i + 1): taps 0 and 1 on the first, tap 2 on the second.
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """The ``(4 O, I, 2, 2)`` phase filters of a ``(O, I, 3, 3)`` filter, phases (row, column) in
    the order (0, 0), (0, 1), (1, 0), (1, 1); computed in float64, returned in the filter's dtype."""
    taps = torch.tensor(_PHASE_TAPS, dtype=torch.float64, device=weight.device)
    phases = torch.einsum("pak,qbl,oikl->pqoiab", taps, taps, weight.detach().double())
    return phases.reshape(4 * weight.shape[0], weight.shape[1], 2, 2).to(weight.dtype)


class PhaseResizeConv2d(nn.Module):
    """Drop-in, inference-only replacement of a :class:`ResizeConv2d` (weights copied)."""

    def __init__(self, layer: ResizeConv2d) -> None:
        super().__init__()
        conv = layer.conv
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("weight", phase_weight(conv.weight))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().repeat(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        # output (r, c) of the 2x2 convolution reads low-resolution rows r - 1, r and columns c - 1, c
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.weight, self.bias)
        return place_phases(y, x.new_empty((n, self.out_channels, 2 * h, 2 * w)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, 2x nearest + 3x3 as four 2x2 phase filters"


def place_phases(y: torch.Tensor, out: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Write phase-filter outputs into their places of the doubled image ``out``.

    Args:
        y: ``(N, 4 O, k, W + 1)`` outputs of the phase filters (:func:`phase_weight`) at rows
            ``first .. first + k - 1`` of their ``(H + 1, W + 1)`` grid on the replicate-padded input.
        out: ``(N, O, 2 H, 2 W)``, written in place; even outputs ``2i`` come from grid position ``i``,
            odd outputs ``2i + 1`` from position ``i + 1``.
        first: the grid row of ``y``'s first row (a band of rows; 0 for the whole grid).

    Returns:
        ``out``.
    """
    n, o, h2, w2 = out.shape
    h, w = h2 // 2, w2 // 2
    y = y.view(n, 2, 2, o, y.shape[-2], w + 1)
    stop = first + y.shape[-2]
    for p in (0, 1):
        # phase p at grid row k is output row 2k - p, for k in [p, h + p)
        lo, hi = max(first, p), min(stop, h + p)
        if lo >= hi:
            continue
        for q in (0, 1):
            out[:, :, 2 * lo - p : 2 * hi - p : 2, q::2] = y[:, p, q, :, lo - first : hi - first, q : q + w]
    return out


def to_phase_upsample(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every :class:`ResizeConv2d` computed by phase filters (the
    original untouched; ``network`` itself when it has none)."""
    if not any(isinstance(m, ResizeConv2d) for m in network.modules()):
        return network
    return replace_layers(network, lambda m: type(m) is ResizeConv2d, PhaseResizeConv2d)
