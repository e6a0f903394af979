"""A second degradation family that training never uses: the evaluation's unseen acquisition.

Written apart from :mod:`napari_uspmie.research.acquisition` and
:mod:`napari_uspmie.research.degradation_families` (nothing is imported from them, and their
parameters are not reused), so that a model tuned to the training degradations cannot pass the
evaluation by recognising them. It models artefacts of the MR acquisition itself, in k-space:

1. **Truncated k-space**: only the central fraction of the spatial frequencies is kept, with a
   Tukey (tapered cosine) window; the image loses resolution and rings at edges (Gibbs).
2. **Phase-encode ghosting**: every other k-space line is scaled (motion between lines), which adds
   a shifted, faint copy of the anatomy half a field of view away.
3. **Receive-coil shading**: intensity falls off linearly along one in-plane direction.
4. **Complex noise then magnitude**: noise added to the real and imaginary parts of the
   reconstructed image before its magnitude is taken.
"""

from __future__ import annotations

import numpy as np

__all__ = ["UNSEEN_RANGES", "unseen_degradation"]

#: ``(low, high)`` of each parameter: kept k-space fraction, ghost strength, shading, noise
UNSEEN_RANGES: dict[str, tuple[float, float]] = {
    "kspace_fraction": (0.35, 0.6),
    "ghost": (0.05, 0.15),
    "shading": (0.2, 0.45),
    "noise": (0.01, 0.03),
}


def _tukey(n: int, keep: float, taper: float = 0.3) -> np.ndarray:
    """A centred window over ``n`` frequency bins keeping ``keep`` of them, cosine-tapered at the ends."""
    freq = np.abs(np.fft.fftshift(np.fft.fftfreq(n))) * 2  # 0 at the centre, 1 at the edges
    edge_start = keep * (1 - taper)
    window = np.ones(n)
    ramp = (freq > edge_start) & (freq < keep)
    window[ramp] = 0.5 * (1 + np.cos(np.pi * (freq[ramp] - edge_start) / (keep - edge_start)))
    window[freq >= keep] = 0.0
    return window


def unseen_degradation(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Degrade a 2D image in ``[0, 1]`` with the k-space family (see the module docstring).

    Args:
        image: clean 2D float image in ``[0, 1]``.
        rng: random generator of the draw.

    Returns:
        ``(degraded, params)``: the image clipped to ``[0, 1]`` and the drawn parameters.

    Raises:
        ValueError: not a 2D image.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {x.shape}.")
    p = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in UNSEEN_RANGES.items()}
    h, w = x.shape
    k = np.fft.fftshift(np.fft.fft2(x))
    k *= np.outer(_tukey(h, p["kspace_fraction"]), _tukey(w, p["kspace_fraction"]))
    k[::2] *= 1.0 - p["ghost"]  # phase encoding along rows: alternate lines disagree
    y = np.fft.ifft2(np.fft.ifftshift(k))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    ramp = 0.5 + 0.5 * (xx * np.cos(angle) + yy * np.sin(angle)) / np.sqrt(2)
    y = y * (1.0 - p["shading"] * ramp)
    y = y + rng.normal(0, p["noise"], y.shape) + 1j * rng.normal(0, p["noise"], y.shape)
    p["shading_angle"] = float(angle)
    return np.clip(np.abs(y), 0.0, 1.0), p
