"""A seeded model of a low-quality MRI acquisition, used to make domain A (degraded) images.

The clean image ``x`` (intensities scaled to ``[0, 1]``) passes, in this order, through:

1. **Uneven illumination / coil bias field**: multiplication by a smooth field
   ``exp(-a * f)``, where ``f`` is a random control grid (4 points per axis) upsampled with a
   cubic spline and scaled to ``[0, 1]``; ``a`` is the log-amplitude (``a = 0.3``: the far
   side of the coil receives 74% of the signal). The field only attenuates, so nothing saturates.
2. **Blur / defocus**: a Gaussian point-spread function of standard deviation ``blur_sigma``
   pixels (partial-volume and low-resolution readout smear edges the same way).
3. **Haze and contrast loss**: ``c * x + (1 - c) * h``, which keeps a fraction ``c`` of the
   contrast and lifts the background to a veil of level ``(1 - c) * h``.
4. **Noise**: Rician, the magnitude of the signal plus complex Gaussian noise of standard
   deviation ``noise_sigma`` per channel, ``sqrt((x + n1)**2 + n2**2)``, as in magnitude MR
   images; the result is clipped to ``[0, 1]``.

Each parameter is drawn uniformly from a range scaled by ``severity`` (see
:data:`PARAM_RANGES`, the ranges at ``severity = 1``; ``severity = 0`` is the identity), so a
given seed always yields the same degradation. :func:`degrade_slice` works on one 2D slice,
:func:`degrade_volume` applies one draw of the model to a whole volume in 3D (field, PSF and
noise are volumetric) and returns the input's shape, dtype and intensity range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from napari_uspmie.io.values import cast_like

__all__ = [
    "PARAM_RANGES",
    "AcquisitionParams",
    "sample_params",
    "bias_field",
    "rician_noise",
    "apply_acquisition",
    "degrade_slice",
    "degrade_volume",
]

#: ``(low, high)`` ranges of each parameter at ``severity = 1``; ``contrast_loss = 1 - c``.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "bias_amplitude": (0.2, 0.5),
    "blur_sigma": (0.7, 1.5),
    "contrast_loss": (0.25, 0.45),
    "haze": (0.3, 0.5),
    "noise_sigma": (0.015, 0.035),
}


@dataclass(frozen=True)
class AcquisitionParams:
    """One draw of the degradation model (see the module docstring for each step).

    Attributes:
        bias_amplitude: log-amplitude ``a`` of the multiplicative field ``exp(-a * f)``.
        blur_sigma: Gaussian PSF standard deviation, in pixels (voxels for volumes).
        contrast: fraction ``c`` of the contrast that is kept, in ``(0, 1]``.
        haze: veil level ``h`` in ``[0, 1]`` that lost contrast fades towards.
        noise_sigma: Rician noise standard deviation, as a fraction of the intensity range.
    """

    bias_amplitude: float = 0.0
    blur_sigma: float = 0.0
    contrast: float = 1.0
    haze: float = 0.0
    noise_sigma: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Plain-float dictionary (for JSON manifests)."""
        return {k: float(v) for k, v in asdict(self).items()}


def sample_params(rng: np.random.Generator, severity: float = 1.0) -> AcquisitionParams:
    """Draw degradation parameters; every strength scales linearly with ``severity``.

    Args:
        rng: numpy random generator (the draw consumes a fixed number of values).
        severity: ``0`` gives the identity, ``1`` the ranges of :data:`PARAM_RANGES`.

    Returns:
        The drawn :class:`AcquisitionParams`.

    Raises:
        ValueError: negative severity.
    """
    if severity < 0:
        raise ValueError(f"severity must be >= 0, got {severity}.")
    u = {name: rng.uniform(lo, hi) for name, (lo, hi) in PARAM_RANGES.items()}
    return AcquisitionParams(
        bias_amplitude=severity * u["bias_amplitude"],
        blur_sigma=severity * u["blur_sigma"],
        contrast=float(np.clip(1.0 - severity * u["contrast_loss"], 0.05, 1.0)),
        haze=u["haze"],
        noise_sigma=severity * u["noise_sigma"],
    )


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float, grid: int = 4) -> np.ndarray:
    """Smooth attenuating field ``exp(-amplitude * f)`` with ``f`` in ``[0, 1]``.

    Args:
        shape: spatial shape of the image (2D or 3D).
        rng: random generator for the control grid.
        amplitude: log-amplitude; ``0`` gives a field of ones.
        grid: control points per axis (few points: only slow variations, like coil profiles).

    Returns:
        float64 array of ``shape``.
    """
    f = rng.standard_normal((grid,) * len(shape))
    # A cubic spline through the control grid, evaluated on the image grid (ends on ends), is
    # separable: one small (n x grid) weight matrix per axis instead of a full coordinate array.
    for axis, n in enumerate(shape):
        weights = np.stack(
            [ndimage.zoom(np.eye(grid)[j], n / grid, order=3, mode="nearest", grid_mode=False) for j in range(grid)],
            axis=1,
        )
        f = np.moveaxis(np.tensordot(weights, f, axes=([1], [axis])), 0, axis)
    span = f.max() - f.min()
    f = (f - f.min()) / span if span > 0 else np.zeros(shape)
    return np.exp(-amplitude * f)


def rician_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``x`` plus complex Gaussian noise: ``sqrt((x + n1)**2 + n2**2)``."""
    if sigma <= 0:
        return x
    n1 = rng.normal(0.0, sigma, x.shape)
    n2 = rng.normal(0.0, sigma, x.shape)
    return np.sqrt((x + n1) ** 2 + n2**2)


def apply_acquisition(x: np.ndarray, params: AcquisitionParams, rng: np.random.Generator) -> np.ndarray:
    """Run the four steps on an image already scaled to ``[0, 1]`` (2D or 3D, float).

    Args:
        x: clean image, float, values in ``[0, 1]``.
        params: the degradation to apply.
        rng: random generator for the bias field and the noise.

    Returns:
        Degraded float64 image in ``[0, 1]``, same shape.
    """
    y = np.asarray(x, dtype=np.float64)
    # The field's control grid is always drawn so that the noise that follows does not
    # depend on whether the field is on: same seed, comparable draws across severities.
    y = y * bias_field(y.shape, rng, params.bias_amplitude)
    if params.blur_sigma > 0:
        y = ndimage.gaussian_filter(y, params.blur_sigma, mode="nearest")
    y = params.contrast * y + (1.0 - params.contrast) * params.haze
    y = rician_noise(y, params.noise_sigma, rng)
    return np.clip(y, 0.0, 1.0)


def _unit_range(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Scale to ``[0, 1]`` by the image's own range (0 kept as the floor for positive data)."""
    xf = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(xf)):
        raise ValueError("image contains NaN or Inf values.")
    lo, hi = min(float(xf.min()), 0.0), float(xf.max())
    if hi <= lo:
        return np.zeros_like(xf), lo, lo + 1.0
    return (xf - lo) / (hi - lo), lo, hi


def _restore_range(y: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    return cast_like(y * (hi - lo) + lo, dtype)


def degrade_slice(
    img: np.ndarray,
    rng: np.random.Generator | int | None = None,
    severity: float = 1.0,
    params: AcquisitionParams | None = None,
) -> np.ndarray:
    """Degrade one 2D slice as a low-quality MRI acquisition would.

    Args:
        img: ``(H, W)`` slice, any real dtype. Float images already in ``[0, 1]`` are used
            as they are; anything else is scaled by its own range and scaled back.
        rng: generator or integer seed (``None``: seed 0, so the call is reproducible).
        severity: strength of the drawn degradation (see :func:`sample_params`).
        params: fixed parameters instead of a random draw.

    Returns:
        Degraded slice, same shape and dtype as ``img``.

    Raises:
        ValueError: ``img`` is not 2D or holds NaN/Inf.
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"degrade_slice expects a 2D (H, W) slice, got shape {img.shape}.")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
    params = params if params is not None else sample_params(rng, severity)
    unit, lo, hi = _unit_range(img)
    if np.issubdtype(img.dtype, np.floating) and img.min() >= 0 and img.max() <= 1:
        unit, lo, hi = img.astype(np.float64), 0.0, 1.0
    return _restore_range(apply_acquisition(unit, params, rng), lo, hi, img.dtype)


def degrade_volume(volume: np.ndarray, seed: int = 0, severity: float = 1.0) -> np.ndarray:
    """Degrade a whole volume with one 3D draw of the acquisition model.

    The bias field, the PSF and the noise are volumetric, so neighbouring slices stay
    consistent, as in a real low-quality scan.

    Args:
        volume: ``(D, H, W)`` (or any 3D) array, any real dtype.
        seed: seed of the draw; the same seed gives the same output.
        severity: strength of the degradation (see :func:`sample_params`).

    Returns:
        Degraded volume with the same shape, dtype and intensity range as ``volume``.

    Raises:
        ValueError: ``volume`` is not 3D or holds NaN/Inf.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"degrade_volume expects a 3D volume, got shape {volume.shape}.")
    rng = np.random.default_rng(seed)
    params = sample_params(rng, severity)
    unit, lo, hi = _unit_range(volume)
    return _restore_range(apply_acquisition(unit, params, rng), lo, hi, volume.dtype)
