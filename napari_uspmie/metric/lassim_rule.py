"""One LaSSIM rule for every tool: which level a size gets, and volumes scored slice by slice.

The enhancer is a 2D network run slice by slice, so every tool (``lassim`` command, napari
heatmap, bundle evaluation, demo report) scores what it did the same way:

* a 2D image is one slice; a volume ``(D, H, W)`` is ``D`` slices (axis 0, the slice axis);
* the level is the one asked for (3, the paper's, by default) when a slice's two sides hold it
  (``6 * 2**level + 1`` pixels, :func:`~napari_uspmie.metric.lassim.min_size_for_level`), else the
  largest level that fits, and the level used is reported;
* the score is the mean of the slices' LaSSIM; the map is the slices' maps stacked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_uspmie.metric.lassim import lassim_map, min_size_for_level

__all__ = ["feasible_level", "SliceScores", "lassim_by_slice"]


def feasible_level(shape: tuple[int, ...], level: int = 3) -> int:
    """The largest level ``<= level`` whose band still holds an SSIM window for ``shape`` (H, W)."""
    while level > 0 and min(shape) < min_size_for_level(level):
        level -= 1
    return level


@dataclass
class SliceScores:
    """LaSSIM by the one rule: ``score`` (mean over slices), ``level`` used, ``per_slice``, ``heatmap``."""

    score: float
    level: int
    per_slice: list[float]
    heatmap: np.ndarray | None


def lassim_by_slice(
    pred: np.ndarray, ref: np.ndarray, level: int = 3, max_level: int = 5, rgb: bool = False, heatmap: bool = False
) -> SliceScores:
    """LaSSIM of ``pred`` against ``ref`` by the one rule (module docstring).

    Args:
        pred: enhanced image ``(H, W)``, ``(H, W, 3)`` (with ``rgb``) or volume ``(D, H, W)``.
        ref: the input, same shape.
        level: the level asked for.
        max_level: pyramid depth.
        rgb: the last axis holds colour channels (2D only).
        heatmap: also return the map (slice maps stacked for volumes), upsampled to the image size.

    Raises:
        ValueError: shapes differ, a colour volume, or slices too small for any level (under 7 px).
    """
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}.")
    if rgb and a.ndim != 3:
        raise ValueError(f"colour images must be (H, W, 3), got shape {a.shape}.")
    slices_a = a[None] if rgb or a.ndim == 2 else a
    slices_b = b[None] if rgb or b.ndim == 2 else b
    if slices_a.ndim != (4 if rgb else 3):
        raise ValueError(f"expected a 2D image or a (D, H, W) volume, got shape {a.shape}.")
    spatial = slices_a.shape[1:3]
    used = feasible_level(spatial, min(level, max_level))
    if min(spatial) < min_size_for_level(used):
        raise ValueError(f"slices of {spatial[0]} x {spatial[1]} pixels are too small for LaSSIM (at least 7 x 7).")
    to_batch = (lambda x: torch.from_numpy(np.moveaxis(x, -1, 1))) if rgb else (lambda x: torch.from_numpy(x[:, None]))
    maps, scores = lassim_map(to_batch(slices_a), to_batch(slices_b), used, max_level, return_score=True)
    per_slice = [float(s) for s in np.atleast_1d(scores.numpy())]
    heat = None
    if heatmap:
        stacked = maps.numpy()[:, 0]
        heat = stacked[0] if (rgb or a.ndim == 2) else stacked
    return SliceScores(float(np.mean(per_slice)), used, per_slice, heat)
