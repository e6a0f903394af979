"""Randomised degradations for domain A: many families, and images left clean or mildly degraded.

A generator trained on one degradation model learns that model; one that never sees a good image
in domain A learns to change every image. Each domain-A draw of :func:`random_degradation` is
therefore, with probability :data:`CLEAN_FRACTION`, the clean image itself; with probability
:data:`MILD_FRACTION`, a draw at :data:`MILD_SEVERITY`; otherwise a full-strength draw. A draw
picks one member of each family below with probability :data:`FAMILY_PROBABILITY` (at least one
family is always applied), in this order:

* **bias field**: multiplicative, smooth random (cubic spline through a 4 x 4 grid), polynomial
  (degree 2 in x and y) or sinusoidal (one low-frequency cosine);
* **blur**: Gaussian, box (uniform), linear motion (a line PSF at a random angle) or anisotropic
  Gaussian (different widths along a random direction);
* **resolution loss**: averaging over ``k x k`` blocks, then nearest-neighbour back to the grid, so
  the image keeps the coarse pixel grid of a low-resolution acquisition;
* **haze and contrast loss**: ``c x + (1 - c) h``;
* **noise**: Gaussian, Rician (magnitude MR) or Poisson (photon counts).

Images are float arrays in ``[0, 1]``; every draw is reproducible from its generator.
:mod:`napari_uspmie.research.unseen_degradation` is written apart and never used here: it is the
held-out family of the evaluation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_uspmie.research.acquisition import bias_field, rician_noise

__all__ = ["CLEAN_FRACTION", "MILD_FRACTION", "MILD_SEVERITY", "FAMILY_PROBABILITY", "random_degradation"]

CLEAN_FRACTION = 0.2
MILD_FRACTION = 0.2
MILD_SEVERITY = 0.35
FAMILY_PROBABILITY = 0.6


def _bias(x: np.ndarray, rng: np.random.Generator, s: float) -> tuple[np.ndarray, dict]:
    kind = str(rng.choice(["spline", "polynomial", "sinusoidal"]))
    amplitude = s * rng.uniform(0.2, 0.6)
    h, w = x.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    if kind == "spline":
        field = bias_field(x.shape, rng, amplitude)
    elif kind == "polynomial":
        c = rng.normal(size=6)
        f = c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * xx**2 + c[4] * yy**2 + c[5]
        f = (f - f.min()) / max(np.ptp(f), 1e-12)
        field = np.exp(-amplitude * f)
    else:
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        f = 0.5 + 0.5 * np.cos(np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        field = np.exp(-amplitude * f)
    return x * field, {"bias": kind, "bias_amplitude": float(amplitude)}


def _blur(x: np.ndarray, rng: np.random.Generator, s: float) -> tuple[np.ndarray, dict]:
    kind = str(rng.choice(["gaussian", "box", "motion", "anisotropic"]))
    if kind == "gaussian":
        sigma = s * rng.uniform(0.6, 1.8)
        return ndimage.gaussian_filter(x, sigma, mode="nearest"), {"blur": kind, "blur_size": float(sigma)}
    if kind == "box":
        size = 1 + 2 * max(1, int(round(s * rng.uniform(1, 2.5))))
        return ndimage.uniform_filter(x, size, mode="nearest"), {"blur": kind, "blur_size": float(size)}
    length = max(2.0, s * rng.uniform(3, 9)) if kind == "motion" else 0.0
    angle = rng.uniform(0, np.pi)
    if kind == "motion":
        half = int(np.ceil(length / 2))
        kernel = np.zeros((2 * half + 1, 2 * half + 1))
        for t in np.linspace(-length / 2, length / 2, 4 * half + 1):
            kernel[int(round(half + t * np.sin(angle))), int(round(half + t * np.cos(angle)))] += 1.0
        out = ndimage.convolve(x, kernel / kernel.sum(), mode="nearest")
        return out, {"blur": kind, "blur_size": float(length), "blur_angle": float(angle)}
    sigmas = s * rng.uniform(0.3, 0.8), s * rng.uniform(1.2, 2.5)
    rotated = ndimage.rotate(x, np.degrees(angle), reshape=False, order=1, mode="nearest")
    blurred = ndimage.gaussian_filter(rotated, sigmas, mode="nearest")
    out = ndimage.rotate(blurred, -np.degrees(angle), reshape=False, order=1, mode="nearest")
    return out, {"blur": kind, "blur_size": float(max(sigmas)), "blur_angle": float(angle)}


def _resolution(x: np.ndarray, rng: np.random.Generator, s: float) -> tuple[np.ndarray, dict]:
    k = max(2, int(round(1 + s * rng.uniform(1, 2.5))))
    h, w = x.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    padded = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge")
    blocks = padded.reshape(hp // k, k, wp // k, k).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks, k, axis=0), k, axis=1)[:h, :w], {"coarse_pixels": k}


def _haze(x: np.ndarray, rng: np.random.Generator, s: float) -> tuple[np.ndarray, dict]:
    contrast = float(np.clip(1.0 - s * rng.uniform(0.2, 0.45), 0.05, 1.0))
    haze = rng.uniform(0.2, 0.5)
    return contrast * x + (1.0 - contrast) * haze, {"contrast": contrast, "haze": float(haze)}


def _noise(x: np.ndarray, rng: np.random.Generator, s: float) -> tuple[np.ndarray, dict]:
    kind = str(rng.choice(["gaussian", "rician", "poisson"]))
    if kind == "poisson":
        photons = rng.uniform(40, 200) / max(s, 1e-3) ** 2
        return rng.poisson(np.clip(x, 0, None) * photons) / photons, {"noise": kind, "photons": float(photons)}
    sigma = s * rng.uniform(0.01, 0.04)
    out = x + rng.normal(0.0, sigma, x.shape) if kind == "gaussian" else rician_noise(x, sigma, rng)
    return out, {"noise": kind, "noise_sigma": float(sigma)}


_FAMILIES = (_bias, _blur, _resolution, _haze, _noise)


def random_degradation(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One domain-A draw: the clean image, a mild or a full degradation (see the module docstring).

    Args:
        image: 2D float image in ``[0, 1]``.
        rng: the draw's random generator.

    Returns:
        ``(degraded, record)``: the image in ``[0, 1]`` and the draw's parameters (``"level"`` is
        ``"clean"``, ``"mild"`` or ``"full"``).

    Raises:
        ValueError: not a 2D image.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {x.shape}.")
    u = rng.uniform()
    if u < CLEAN_FRACTION:
        return x.copy(), {"level": "clean"}
    level, severity = ("mild", MILD_SEVERITY) if u < CLEAN_FRACTION + MILD_FRACTION else ("full", 1.0)
    chosen = [f for f in _FAMILIES if rng.uniform() < FAMILY_PROBABILITY] or [_FAMILIES[rng.integers(len(_FAMILIES))]]
    record: dict = {"level": level, "families": [f.__name__.lstrip("_") for f in chosen]}
    for family in chosen:
        x, params = family(x, rng, severity)
        record.update(params)
    return np.clip(x, 0.0, 1.0), record
