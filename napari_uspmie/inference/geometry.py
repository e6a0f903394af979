"""Bring slices to the model's pixel size and the enhancement back onto the input's exact grid.

A network learns structures at the scale of its training pixels; a 2 mm scan fed as it is shows
it anatomy at half that scale. :func:`resampled_enhancement` therefore resamples each slice to
the model's pixel size, enhances it there, and adds the *change* the network made, resampled
back, to the input: the output has the input's shape (so its affine and geometry are untouched),
and detail finer than the model's pixels, which the round trip would blur, is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SPACING_TOLERANCE",
    "RESAMPLE_KEY",
    "resample_factors",
    "resample_factors_of",
    "resize_slices",
    "resampled_enhancement",
]

#: metadata key of a MetaTensor that carries its size factors to the model's pixel size (set by the
#: bundle's preparation, read by the inferer)
RESAMPLE_KEY = "resample_factors"

#: relative pixel-size difference below which slices are enhanced as they are
SPACING_TOLERANCE = 0.15


def resample_factors(
    spacing: Sequence[float] | None, model_spacing: Sequence[float] | None
) -> tuple[float, float] | None:
    """Size factors ``(rows, columns)`` that bring pixels of ``spacing`` to ``model_spacing``.

    Returns:
        ``None`` when either is unknown (absent, or not positive finite numbers: a broken header
        must not resample slices to nothing) or they agree within :data:`SPACING_TOLERANCE`.
    """
    if not (_known(spacing) and _known(model_spacing)):
        return None
    factors = (float(spacing[0]) / float(model_spacing[0]), float(spacing[1]) / float(model_spacing[1]))
    if all(abs(f - 1.0) <= SPACING_TOLERANCE for f in factors):
        return None
    return factors


def _known(spacing: Sequence[float] | None) -> bool:
    """Whether ``spacing`` holds two pixel sizes that can be resampled from or to."""
    if spacing is None or len(spacing) < 2:
        return False
    sizes = [float(s) for s in spacing[:2]]
    return all(math.isfinite(s) and s > 0 for s in sizes)


def resample_factors_of(x: object) -> tuple[float, float] | None:
    """The size factors a (possibly collated) MetaTensor carries under :data:`RESAMPLE_KEY`."""
    meta = getattr(x, "meta", None)
    value = meta.get(RESAMPLE_KEY) if isinstance(meta, dict) else None
    if value is None:
        return None
    parts = value if isinstance(value, (list, tuple)) else [value]
    flat = torch.cat([torch.as_tensor(v, dtype=torch.float64).flatten() for v in parts])
    if flat.numel() < 2 or torch.allclose(flat[:2], torch.ones(2, dtype=torch.float64)):
        return None
    return float(flat[0]), float(flat[1])


def resize_slices(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size``: bilinear, antialiased when shrinking, aligned pixel areas."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resampled_enhancement(
    x: torch.Tensor, factors: tuple[float, float] | None, enhance: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``enhance`` run at the model's pixel size, its change brought back to ``x``'s grid.

    Args:
        x: ``(N, C, H, W)`` slices in the network's ``[-1, 1]``.
        factors: from :func:`resample_factors`; ``None`` enhances ``x`` as it is.
        enhance: the network pass (same shape in and out).

    Returns:
        ``(N, C, H, W)`` in ``[-1, 1]``: ``x + back(enhance(there(x)) - there(x))``.
    """
    if factors is None:
        return enhance(x)
    h, w = x.shape[-2:]
    size = (max(16, round(h * factors[0])), max(16, round(w * factors[1])))
    there = resize_slices(x, size)
    change = enhance(there) - there
    return (x + resize_slices(change, (h, w))).clamp(-1.0, 1.0)
