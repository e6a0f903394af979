"""Banded linear maps along one image axis, as matrix products on blocks of outputs.

Filtering and decimating an axis is a linear map whose outputs each depend on a few
neighbouring samples. Applied as shifted views of the data, it costs a pass over memory and an
operator call per tap, and on a CPU the calls' fixed cost dominates for the small images of a
pyramid's coarse levels. Here the map is cut into blocks of :data:`OUTPUTS_PER_BLOCK` outputs, each
a small dense matrix over the samples those outputs reach, and the axis is one matrix product per
block: more multiply-adds than the taps need, run several times faster, borders included.

A block is built by running the map itself on unit impulses at the samples it reaches, so the
matrix form is the reference operation by construction. Blocks are built in float64 and cast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["OUTPUTS_PER_BLOCK", "AxisBlock", "impulse_blocks", "cast_blocks", "apply_blocks"]

#: Outputs per block: fewer means fewer multiply-adds outside the taps' reach, more means fewer
#: calls; of 4, 8, 16 and 64, 16 was the fastest or within 20% of it on axes of 272 to 1024 samples.
OUTPUTS_PER_BLOCK = 16


class AxisBlock(NamedTuple):
    """Outputs ``first_output ...`` (``weights.shape[0]`` of them) from samples ``first_sample ...``
    (``weights.shape[1]``)."""

    first_output: int
    first_sample: int
    weights: torch.Tensor


def impulse_blocks(
    n_in: int,
    n_out: int,
    operation: Callable[[torch.Tensor], torch.Tensor],
    reach: Callable[[int, int], tuple[int, int]],
    step: int = 1,
) -> tuple[AxisBlock, ...]:
    """The map of ``operation`` along an axis, in blocks of :data:`OUTPUTS_PER_BLOCK` outputs.

    Each block runs ``operation`` on impulses placed in a window of the axis around the samples it
    reaches, not on the whole axis, so building all blocks costs in proportion to the axis length.
    The window starts at a multiple of ``step`` (its outputs then line up with the axis's) and ends
    at the axis's ends where the block reaches them, so the operation's own end handling is there;
    an end of the window inside the axis lies beyond every sample the block's outputs depend on.

    Args:
        n_in, n_out: samples in and out.
        operation: the map, applied along ``dim=2`` of a float64 ``(1, 1, L, k)`` tensor, for any
            window length ``L``, ``ceil(L / step)`` outputs.
        reach: ``(first, last)`` outputs to the ``(start, stop)`` samples they depend on (clipped
            to the axis here); a sample outside it must not reach them.
        step: input samples per output.

    Returns:
        float64 blocks covering outputs ``0 .. n_out - 1``.
    """
    blocks = []
    for first in range(0, n_out, OUTPUTS_PER_BLOCK):
        last = min(first + OUTPUTS_PER_BLOCK, n_out) - 1
        start, stop = reach(first, last)
        start, stop = max(start, 0), min(stop, n_in)
        low = max(0, start - step) // step * step  # a step's margin: every pass keeps at least 3 samples
        high = min(n_in, stop + step)
        impulses = torch.zeros(1, 1, high - low, stop - start, dtype=torch.float64)
        impulses[0, 0, start - low + torch.arange(stop - start), torch.arange(stop - start)] = 1.0
        outputs = operation(impulses)[0, 0, first - low // step : last - low // step + 1]
        blocks.append(AxisBlock(first, start, outputs.clone()))  # a copy: not a view of the whole response
    return tuple(blocks)


def cast_blocks(blocks: tuple[AxisBlock, ...], dtype: torch.dtype) -> tuple[AxisBlock, ...]:
    """``blocks`` with their weights in ``dtype``."""
    return tuple(AxisBlock(b.first_output, b.first_sample, b.weights.to(dtype)) for b in blocks)


def apply_blocks(x: torch.Tensor, dim: int, blocks: tuple[AxisBlock, ...]) -> torch.Tensor:
    """Apply the blocks' map along axis ``dim`` of ``x``: ``-2`` (rows) or ``-1`` (columns).

    Returns:
        A contiguous tensor, the axis replaced by the map's outputs.
    """
    if dim == -2:
        parts = [torch.matmul(b.weights, x.narrow(-2, b.first_sample, b.weights.shape[1])) for b in blocks]
    elif dim == -1:
        parts = [torch.matmul(x.narrow(-1, b.first_sample, b.weights.shape[1]), b.weights.t()) for b in blocks]
    else:
        raise ValueError(f"dim must be -2 or -1, got {dim}.")
    return torch.cat(parts, dim=dim) if len(parts) > 1 else parts[0].contiguous()
