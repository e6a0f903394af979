"""The fast path's Gaussian levels: ``depth`` pyrDown steps of an axis by banded matrix products (2D, CPU).

``depth`` pyrDown steps along an axis are one linear map from its ``n`` samples to
``ceil(n / 2 ** depth)`` outputs, output ``o`` reaching samples ``2 ** depth * o`` plus or minus
``2 ** (depth + 1) - 2`` (reflect-101 at every step folds the taps at the ends back inside that
range). The level-by-level reference
(:mod:`napari_uspmie.metric.pyramid`) makes a pass over memory per step and tap and many small calls;
here each axis is a few matrix products on blocks of outputs (:mod:`napari_uspmie.metric.axis_maps`),
the blocks built by running the reference steps on unit impulses. Their weights are sums of products
of ``k / 16`` (exact in binary), so results differ from the reference path only by rounding: about
1e-7 of the image's range in float32, 1e-16 in float64. Every function here expects what
:func:`napari_uspmie.metric.bands.fast_path_applies` checks: a ``(B, C, H, W)`` float32 or float64
CPU tensor without gradients.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from napari_uspmie.metric.axis_maps import AxisBlock, apply_blocks, cast_blocks, impulse_blocks
from napari_uspmie.metric.pyramid import pyr_down_axis

__all__ = ["down_blocks", "down_rows", "down_columns", "gaussian_level"]


@lru_cache(maxsize=512)
def down_blocks(n: int, depth: int, dtype: torch.dtype = torch.float64) -> tuple[AxisBlock, ...]:
    """The map of ``depth`` pyrDown steps along an axis of ``n`` samples; cached per length, depth and dtype.

    Raises:
        ValueError: ``depth`` below 1, or an axis too short for ``depth`` steps (a step needs 3 samples).
    """
    if dtype != torch.float64:
        return cast_blocks(down_blocks(n, depth), dtype)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    if -(-n // 2 ** (depth - 1)) < 3:
        raise ValueError(f"an axis of {n} samples is too short for {depth} pyrDown steps.")
    step, half = 2**depth, 2 ** (depth + 1) - 2

    def steps(impulses: torch.Tensor) -> torch.Tensor:
        for _ in range(depth):
            impulses = pyr_down_axis(impulses, 2)
        return impulses

    return impulse_blocks(
        n, -(-n // step), steps, lambda first, last: (step * first - half, step * last + half + 1), step
    )


def down_rows(x: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """``depth`` pyrDown steps along the rows (``dim=2``) of a ``(B, C, H, W)`` tensor: ``(B, C, H', W)``."""
    return apply_blocks(x, -2, down_blocks(x.shape[2], depth, x.dtype))


def down_columns(x: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """``depth`` pyrDown steps along the columns (``dim=3``) of a ``(B, C, H, W)`` tensor: ``(B, C, H, W')``."""
    return apply_blocks(x, -1, down_blocks(x.shape[3], depth, x.dtype))


def gaussian_level(x: torch.Tensor, depth: int) -> torch.Tensor:
    """Gaussian level ``depth`` of every channel of ``x``: the rows, then the columns of an image
    ``2 ** depth`` times shorter (the steps are linear maps of different axes, reflect-101 borders
    per axis too, so the order changes the result only by rounding).

    Args:
        x: ``(B, C, H, W)`` float32 or float64 CPU tensor, every side long enough for ``depth`` steps.
        depth: number of halvings, ``>= 1``.

    Returns:
        ``(B, C, H / 2 ** depth, W / 2 ** depth)`` (sizes rounded up at every halving).

    Raises:
        ValueError: a side too short for ``depth`` steps (or ``depth`` below 1).
    """
    return down_columns(down_rows(x, depth), depth)
