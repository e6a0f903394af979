"""The one colour map of LaSSIM heatmaps, for saved figures, sample images and napari layers.

A LaSSIM map holds SSIM values between Laplacian bands: 1 where structure was kept, lower where
it changed (it can go below 0). Every heatmap the package shows uses the same colours over the
same fixed range, 0 to 1, so colours compare across images and tools: red (changed, 0 or
below) through yellow (0.5) to green (kept, 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HEATMAP_NAME", "HEATMAP_RANGE", "HEATMAP_CONTROLS", "HEATMAP_COLORS", "heatmap_rgb", "heatmap_cmap"]

HEATMAP_NAME = "lassim (red = changed)"
#: values mapped to the ends of the colour map; values outside are shown as the end colours
HEATMAP_RANGE: tuple[float, float] = (0.0, 1.0)
#: positions in [0, 1] of the colours below
HEATMAP_CONTROLS: tuple[float, ...] = (0.0, 0.5, 1.0)
#: RGB in [0, 1]: red, yellow, green
HEATMAP_COLORS: tuple[tuple[float, float, float], ...] = ((0.80, 0.05, 0.05), (1.0, 0.85, 0.15), (0.10, 0.65, 0.25))


def heatmap_rgb(values: np.ndarray) -> np.ndarray:
    """Colour a LaSSIM map: ``(...)`` values to ``(..., 3)`` uint8 RGB (NaN shown as the "changed" end).

    Args:
        values: map values; clipped to :data:`HEATMAP_RANGE`.

    Returns:
        The colours, linearly interpolated between the control colours.
    """
    lo, hi = HEATMAP_RANGE
    t = np.clip((np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    colors = np.asarray(HEATMAP_COLORS)
    rgb = np.stack([np.interp(t, HEATMAP_CONTROLS, colors[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def heatmap_cmap():
    """The same colour map as a matplotlib ``Colormap`` (for figures with a colour bar)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(HEATMAP_NAME, list(zip(HEATMAP_CONTROLS, HEATMAP_COLORS, strict=True)))
