"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan, Bovik, IEEE SPL 2013).

A no-reference quality score: the distance between the natural-scene statistics of an image
and those of a "pristine" model fitted on high-quality images. Lower is better.

Pipeline (per image, grayscale, intensities in ``[0, 255]``):

1. **MSCN coefficients** ``(I - mu) / (sigma + 1)``, ``mu`` and ``sigma`` the local mean and
   standard deviation under a 7 x 7 Gaussian window (sigma 7/6), as in the paper.
2. **Patch features** on non-overlapping ``patch_size`` patches at two scales (the image and its
   half-size bicubic reduction, patches of half the size), 18 per scale, 36 in all:
   a generalised Gaussian (GGD) fit of the MSCN coefficients (shape, variance) and asymmetric
   GGD (AGGD) fits of the products of neighbouring coefficients in four directions
   (horizontal, vertical, both diagonals; shape, mean, left and right variances). Both fits
   use moment matching over a shape grid ``0.2 : 0.001 : 10``.
3. **Pristine model**: a multivariate Gaussian ``(mu_p, Sigma_p)`` of the features of the
   *sharpest* patches (local-sigma mean above ``0.75 x`` the image's sharpest patch) of clean
   training images (:func:`fit_pristine_model`).
4. **Score**: fit ``(mu_t, Sigma_t)`` to all patches of the test image and return
   ``sqrt((mu_p - mu_t)^T ((Sigma_p + Sigma_t) / 2)^+ (mu_p - mu_t))``.

Medical images have flat background (exactly 0 outside the body in many scans) where MSCN is
zero and the fits are undefined; patches whose mean local sigma is below ``flat_sigma`` (default
0.5 grey levels) are skipped, in the pristine fit and in the score alike. The original model
uses 96 x 96 patches of natural photographs; slices of a 1 mm brain MRI are about 200 pixels
wide, so the model fitted here uses 32 x 32 patches (:data:`DEFAULT_PATCH`); the patch size is
stored with the model and reused when scoring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import gamma as gamma_fn

__all__ = ["DEFAULT_PATCH", "mscn", "ggd_fit", "aggd_fit", "patch_features", "NIQEModel", "fit_pristine_model", "niqe"]

DEFAULT_PATCH = 32
SHARPNESS_FRACTION = 0.75
_GRID = np.arange(0.2, 10.0 + 1e-9, 0.001)
# Moment ratios of a (A)GGD as a function of its shape, tabulated once.
_GGD_RATIO = gamma_fn(1 / _GRID) * gamma_fn(3 / _GRID) / gamma_fn(2 / _GRID) ** 2
_AGGD_RATIO = gamma_fn(2 / _GRID) ** 2 / (gamma_fn(1 / _GRID) * gamma_fn(3 / _GRID))
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def mscn(image: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local sigma map.

    Args:
        image: 2D float image in ``[0, 255]``.
        c: stabilising constant of the divisive normalisation.

    Returns:
        ``(mscn, sigma)``, both the image's shape.
    """
    w = _gaussian_window()
    mu = ndimage.correlate(image, w, mode="nearest")
    var = ndimage.correlate(image * image, w, mode="nearest") - mu * mu
    sigma = np.sqrt(np.abs(var))
    return (image - mu) / (sigma + c), sigma


def _lookup(ratio_table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Shape parameter whose tabulated ratio is nearest to each value (moment matching)."""
    return _GRID[np.argmin(np.abs(ratio_table[None, :] - values[:, None]), axis=1)]


def ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean GGD fit of each row of ``x`` (``(N, n)``): returns ``(shape, variance)``."""
    var = np.mean(x * x, axis=1)
    mean_abs = np.mean(np.abs(x), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = var / mean_abs**2
    return _lookup(_GGD_RATIO, np.nan_to_num(rho, nan=np.inf)), var


def aggd_fit(x: np.ndarray) -> np.ndarray:
    """AGGD fit of each row of ``x`` (``(N, n)``): columns ``(shape, mean, left var, right var)``."""
    neg, pos = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.sum(np.where(neg, x * x, 0), axis=1) / np.sum(neg, axis=1))
        right = np.sqrt(np.sum(np.where(pos, x * x, 0), axis=1) / np.sum(pos, axis=1))
        gam = left / right
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        r_norm = r_hat * (gam**3 + 1) * (gam + 1) / (gam**2 + 1) ** 2
    alpha = _lookup(_AGGD_RATIO, np.nan_to_num(r_norm, nan=np.inf))
    scale = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    mean = (right - left) * scale * gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
    return np.stack([alpha, mean, left**2, right**2], axis=1)


def _patches(x: np.ndarray, p: int) -> np.ndarray:
    """Non-overlapping ``p x p`` patches, row-major, as ``(N, p * p)`` (the remainder is dropped)."""
    h, w = (x.shape[0] // p) * p, (x.shape[1] // p) * p
    return x[:h, :w].reshape(h // p, p, w // p, p).swapaxes(1, 2).reshape(-1, p * p)


def _scale_features(image: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    coeffs, sigma = mscn(image)
    blocks = _patches(coeffs, p)
    shape, var = ggd_fit(blocks)
    feats = [shape[:, None], var[:, None]]
    for dy, dx in _SHIFTS:
        # Circular shift, as in the reference implementation.
        feats.append(aggd_fit(_patches(coeffs * np.roll(coeffs, (-dy, -dx), axis=(0, 1)), p)))
    return np.concatenate(feats, axis=1), _patches(sigma, p).mean(axis=1)


def _as_255(image: np.ndarray) -> np.ndarray:
    """Grayscale float in ``[0, 255]``: integers scaled by their dtype, floats in ``[0, 1]`` by 255."""
    arr = np.asarray(image)
    x = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        x *= 255.0 / np.iinfo(arr.dtype).max
    elif x.size and x.max() <= 1.0:
        x *= 255.0
    if x.ndim == 3 and x.shape[-1] == 3:
        x = x @ np.array([0.2125, 0.7154, 0.0721])
    if x.ndim != 2:
        raise ValueError(f"NIQE needs a 2D grayscale or (H, W, 3) RGB image, got shape {arr.shape}.")
    return x


def patch_features(image: np.ndarray, patch_size: int = DEFAULT_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """36 NIQE features for each patch, and each patch's sharpness (mean local sigma).

    Args:
        image: 2D grayscale (or RGB) image; floats in ``[0, 1]`` and integer images are scaled
            to ``[0, 255]``.
        patch_size: patch side at full resolution (must be even; half of it is used at half scale).

    Returns:
        ``(features (N, 36), sharpness (N,))``.

    Raises:
        ValueError: not an image, or smaller than one patch.
    """
    x = _as_255(image)
    if min(x.shape) < patch_size:
        raise ValueError(f"image {x.shape} is smaller than one {patch_size}x{patch_size} NIQE patch.")
    h, w = (x.shape[0] // patch_size) * patch_size, (x.shape[1] // patch_size) * patch_size
    x = x[:h, :w]
    f1, sharp = _scale_features(x, patch_size)
    half = np.clip(ndimage.zoom(x, 0.5, order=3, mode="mirror", grid_mode=True), 0, 255)
    f2, _ = _scale_features(half, patch_size // 2)
    return np.concatenate([f1, f2], axis=1), sharp


def _informative(feats: np.ndarray, sharp: np.ndarray, flat_sigma: float) -> np.ndarray:
    return (sharp >= flat_sigma) & np.all(np.isfinite(feats), axis=1)


@dataclass
class NIQEModel:
    """Multivariate Gaussian of pristine patch features.

    Attributes:
        mean: ``(36,)`` feature mean.
        cov: ``(36, 36)`` feature covariance.
        patch_size: patch side the model was fitted with.
        flat_sigma: patches flatter than this (mean local sigma, grey levels) are skipped.
    """

    mean: np.ndarray
    cov: np.ndarray
    patch_size: int = DEFAULT_PATCH
    flat_sigma: float = 0.5

    def save(self, path: str | Path) -> None:
        """Write the model to an ``.npz`` file."""
        np.savez(path, mean=self.mean, cov=self.cov, patch_size=self.patch_size, flat_sigma=self.flat_sigma)

    @classmethod
    def load(cls, path: str | Path) -> NIQEModel:
        """Read a model written by :meth:`save`."""
        with np.load(path) as z:
            return cls(z["mean"], z["cov"], int(z["patch_size"]), float(z["flat_sigma"]))

    def score(self, image: np.ndarray) -> float:
        """NIQE of ``image`` against this model (lower is better).

        Raises:
            ValueError: the image has fewer than two informative patches.
        """
        feats, sharp = patch_features(image, self.patch_size)
        feats = feats[_informative(feats, sharp, self.flat_sigma)]
        if len(feats) < 2:
            raise ValueError("image has fewer than two non-flat NIQE patches; use a larger image or smaller patches.")
        mu = feats.mean(axis=0)
        cov = np.cov(feats, rowvar=False)
        diff = self.mean - mu
        return float(np.sqrt(max(diff @ np.linalg.pinv((self.cov + cov) / 2) @ diff, 0.0)))


def fit_pristine_model(
    images: Iterable[np.ndarray], patch_size: int = DEFAULT_PATCH, flat_sigma: float = 0.5
) -> NIQEModel:
    """Fit the pristine model on the sharpest patches of high-quality images.

    Args:
        images: clean images (2D grayscale or RGB, same conventions as :func:`patch_features`).
        patch_size: patch side.
        flat_sigma: flat-patch threshold (see the module docstring).

    Returns:
        The fitted :class:`NIQEModel`.

    Raises:
        ValueError: fewer than two usable patches in all the images.
    """
    kept = []
    for image in images:
        feats, sharp = patch_features(image, patch_size)
        ok = _informative(feats, sharp, flat_sigma)
        if not np.any(ok):
            continue
        ok &= sharp > SHARPNESS_FRACTION * sharp[ok].max()
        kept.append(feats[ok])
    feats = np.concatenate(kept) if kept else np.empty((0, 36))
    if len(feats) < 2:
        raise ValueError("not enough sharp, non-flat patches to fit a NIQE pristine model.")
    return NIQEModel(feats.mean(axis=0), np.cov(feats, rowvar=False), patch_size, flat_sigma)


def niqe(image: np.ndarray, model: NIQEModel) -> float:
    """NIQE score of ``image`` under a pristine ``model`` (lower is better)."""
    return model.score(image)


def load_gray(path: str | Path) -> np.ndarray:
    """Read an image file as a float grayscale array in ``[0, 1]`` (PIL; 8 or 16 bit)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
        return arr / 255.0
    return arr.astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 255.0)
