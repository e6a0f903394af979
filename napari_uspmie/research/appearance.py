"""Appearance draws of clean training slices: resolution, contrast curve, gamma and peak intensity.

One template is one anatomy at one resolution with one contrast; a generator trained on it alone
turns every scan into the template. Each clean training slice therefore gets a seeded draw of how
another scanner might have shown it (see :func:`vary_appearance`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "LOW_RES_PROB",
    "LOW_RES_MM",
    "GAMMA_LOG_RANGE",
    "DRAWS",
    "REMAP_PROB",
    "REMAP_KNOTS",
    "PEAK_RANGE",
    "vary_appearance",
]

#: Probability that a training slice is re-acquired at a coarser resolution.
LOW_RES_PROB = 0.5
#: Range of the coarser pixel size (mm, drawn per axis) of such a slice.
LOW_RES_MM = (1.5, 4.5)
#: Contrast variation: gamma drawn log-uniformly in ``exp(+-GAMMA_LOG_RANGE)``.
GAMMA_LOG_RANGE = 0.3
#: Appearance draws per training slice: more variety from one template.
DRAWS = 2
#: Probability of a random tissue-contrast lookup curve (see :func:`vary_appearance`).
REMAP_PROB = 0.35
#: Knots of that curve on ``[0, 1]``; the value at 0 stays 0, the others are drawn in ``[0.15, 1]``.
REMAP_KNOTS = 6
#: Range of the brightest value of a training slice (intensity scaling: not every scan fills 0..255).
PEAK_RANGE = (0.55, 1.0)


def vary_appearance(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """One seeded appearance draw of a clean ``[0, 1]`` slice: resolution and contrast.

    With probability :data:`LOW_RES_PROB` the slice is averaged over coarser pixels (a Gaussian of
    the box's standard deviation, ``pixel / sqrt(12)``, then linear resampling down to that pixel
    size and back to the original grid). With probability :data:`REMAP_PROB` intensities pass
    through a random piecewise-linear curve through :data:`REMAP_KNOTS` evenly spaced knots (0 maps
    to 0, the others to values drawn in ``[0.15, 1]``, rescaled so the brightest is 1; the curve need
    not be monotone, which swaps tissue contrasts). Then ``peak * x ** gamma``, the peak drawn in
    :data:`PEAK_RANGE`. Zero stays zero.

    Returns:
        ``(image, params)`` with ``params = {"pixel_y", "pixel_x", "gamma", "remap", "peak"}`` (pixel
        sizes in mm, 1 = unchanged; ``remap`` the curve's values at the knots, ``[]`` when not
        remapped).
    """
    pixel = (1.0, 1.0)
    if rng.random() < LOW_RES_PROB:
        pixel = tuple(float(p) for p in rng.uniform(*LOW_RES_MM, size=2))
    remap: list[float] = []
    if rng.random() < REMAP_PROB:
        values = rng.uniform(0.15, 1.0, size=REMAP_KNOTS - 1)
        remap = [0.0, *(float(v) for v in values / values.max())]
    gamma = float(np.exp(rng.uniform(-GAMMA_LOG_RANGE, GAMMA_LOG_RANGE)))
    out = np.asarray(image, dtype=np.float64)
    if pixel != (1.0, 1.0):
        smooth = ndimage.gaussian_filter(out, [p / np.sqrt(12.0) for p in pixel], mode="nearest")
        coarse_shape = [max(2, round(n / p)) for n, p in zip(out.shape, pixel, strict=True)]
        coarse = ndimage.zoom(
            smooth,
            [c / n for c, n in zip(coarse_shape, out.shape, strict=True)],
            order=1,
            grid_mode=True,
            mode="nearest",
        )
        out = ndimage.zoom(
            coarse,
            [n / c for n, c in zip(out.shape, coarse.shape, strict=True)],
            order=1,
            grid_mode=True,
            mode="nearest",
        )
    out = np.clip(out, 0.0, 1.0)
    if remap:
        out = np.interp(out, np.linspace(0.0, 1.0, REMAP_KNOTS), remap)
    peak = float(rng.uniform(*PEAK_RANGE))
    look = {"pixel_y": pixel[0], "pixel_x": pixel[1], "gamma": gamma, "remap": remap, "peak": peak}
    return peak * out**gamma, look
