"""Checkerboard index: how much of an image is a pattern repeating every few pixels.

Stride-2 transposed convolutions print a fixed pattern of period 2 and 4 on their outputs.
For period ``p`` the index is the variance of the image's mean ``p x p`` tile (each tile pixel the
mean of every ``p``-th pixel of the image at that offset) over the variance of the image: a
pattern repeating every ``p`` pixels (period ``p`` or any divisor of it) survives the averaging
whole, anatomy and noise average out. Smooth images score near 0, a pure checkerboard 1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["checkerboard_index"]


def checkerboard_index(image: np.ndarray, period: int = 4) -> np.ndarray | float:
    """Share of an image's variance that repeats every ``period`` pixels along both axes.

    Args:
        image: ``(H, W)`` or a stack ``(..., H, W)`` of grey images (any real dtype).
        period: the pattern's period in pixels (4 covers periods 4 and 2).

    Returns:
        A float for one image, else an array of one index per image; 0 for a constant image.

    Raises:
        ValueError: an image smaller than two periods along an axis, or a period below 2.
    """
    x = np.asarray(image, dtype=np.float64)
    if period < 2:
        raise ValueError(f"period must be at least 2, got {period}.")
    if x.ndim < 2 or min(x.shape[-2:]) < 2 * period:
        raise ValueError(f"need images of at least {2 * period} x {2 * period} pixels, got shape {x.shape}.")
    h, w = (s - s % period for s in x.shape[-2:])
    x = x[..., :h, :w]
    tiles = x.reshape(*x.shape[:-2], h // period, period, w // period, period).mean(axis=(-4, -2))
    pattern = tiles.var(axis=(-2, -1))
    total = x.var(axis=(-2, -1))
    index = np.divide(pattern, total, out=np.zeros_like(total), where=total > 0)
    return float(index) if index.ndim == 0 else index
