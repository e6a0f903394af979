"""LaSSIM: SSIM between Laplacian residuals (Cap, Fukuda, Iyatomi, BSPC 2025).

Both images are reduced to grayscale, then to one residual band of an OpenCV-style
Laplacian pyramid (:mod:`napari_uspmie.metric.pyramid`); SSIM is computed between the two
bands exactly as ``skimage.metrics.structural_similarity`` does by default:

* uniform ``7 x 7`` (``7 x 7 x 7`` for volumes) window, ``K1 = 0.01``, ``K2 = 0.03``;
* sample covariance (``N / (N - 1)``);
* the mean is taken over the map cropped by 3 samples on every side;
* ``data_range`` is the joint range of the two residuals.

Blur leaves that band nearly intact while a structural deformation changes it, so
LaSSIM separates "only blurred" from "deformed and blurred" where plain SSIM cannot.
The SSIM map at the band, upsampled to the image size, is the LaSSIM heatmap.
Everything is differentiable and runs on the tensors' device. Large float32 CPU batches take
a fast path to the band (:func:`napari_uspmie.metric.bands.fast_path_applies` decides;
``path=`` forces one). On a CPU, a call uses the cores other processes leave free
(:mod:`napari_uspmie.metric.cpu_share`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_uspmie.metric.bands import PathChoice, as_compute, band_pair, compute_dtype, to_gray
from napari_uspmie.metric.cpu_share import shared_core_threads
from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = ["GRAY_WEIGHTS", "to_gray", "ssim_map", "lassim", "lassim_map", "min_size_for_level"]

WINDOW = 7
K1 = 0.01
K2 = 0.03


def min_size_for_level(level: int, window: int = WINDOW) -> int:
    """Smallest spatial size whose level-``level`` band still holds one SSIM window."""
    return (window - 1) * 2**level + 1


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad every spatial axis with scipy's ``"reflect"`` (edge sample repeated) mode."""
    for dim in range(2, x.ndim):
        n = x.shape[dim]
        head = x.narrow(dim, 0, pad).flip(dim)
        tail = x.narrow(dim, n - pad, pad).flip(dim)
        x = torch.cat([head, x, tail], dim=dim)
    return x


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Valid ``window``-wide uniform mean over every spatial axis of ``(N, 1, ...)``."""
    # Sums of shifted views: the same arithmetic as a valid convolution, much faster on CPU in float64.
    for dim in range(2, x.ndim):
        n = x.shape[dim] - window + 1
        acc = torch.add(x.narrow(dim, 0, n), x.narrow(dim, 1, n))
        for k in range(2, window):
            acc.add_(x.narrow(dim, k, n))
        x = acc.mul_(1.0 / window)
    return x


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: torch.Tensor,
    window: int = WINDOW,
    k1: float = K1,
    k2: float = K2,
    full: bool = False,
) -> torch.Tensor:
    """SSIM map between single-channel ``x`` and ``y`` with skimage's conventions.

    Args:
        x, y: ``(B, 1, *spatial)`` tensors of one floating dtype.
        data_range: ``(B,)`` dynamic range per item; a zero range (two constant, equal
            bands) yields 1.
        window: side of the uniform window.
        k1, k2: SSIM stabilising constants.
        full: ``False`` gives the valid map (``window - 1`` samples smaller per axis),
            whose mean is skimage's score; ``True`` pads like skimage's ``full=True`` map.

    Returns:
        ``(B, 1, *spatial')`` SSIM map.
    """
    b = x.shape[0]
    nd = x.ndim - 2
    if full:
        x = _symmetric_pad(x, (window - 1) // 2)
        y = _symmetric_pad(y, (window - 1) // 2)
    shape = (b,) + (1,) * (nd + 1)
    # Second moments about a per-item shift: E[x^2] - E[x]^2 cancels catastrophically in float32 when
    # a band's mean is large against its spread (the coarsest Gaussian level); the shift leaves
    # variances and covariance unchanged and is added back to the means.
    shift = 0.5 * (x.flatten(1).mean(dim=1) + y.flatten(1).mean(dim=1)).reshape(shape)
    x, y = x - shift, y - shift
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)  # (B, 5, 1, ...)
    means = _box_mean(stats.reshape(b * 5, 1, *x.shape[2:]), window)
    ux, uy, uxx, uyy, uxy = means.reshape(b, 5, 1, *means.shape[2:]).unbind(1)
    n = window**nd
    cov_norm = n / (n - 1.0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    ux, uy = ux + shift, uy + shift
    # A zero range means both bands are the same constant; any positive range then gives 1.
    rng = torch.where(data_range > 0, data_range, torch.ones_like(data_range)).reshape(shape)
    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


def _to_batched(image: Any, name: str, dtype: torch.dtype | None) -> tuple[torch.Tensor, bool]:
    """Bring an image to a ``(B, C, *spatial)`` tensor; flag numpy input.

    Integer data is scaled by its dtype's maximum (the score does not depend on that scaling).
    Unless ``dtype`` says otherwise, tensors keep their dtype and layout: floating ones are computed
    in it, integer ones in float32 one cache-sized piece at a time (scores within about 1e-7 of
    the reference; :func:`napari_uspmie.metric.bands.as_compute`); arrays, one interactive pair at
    a time, go to float64, where scores equal the reference pipeline's.
    """
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim not in (4, 5):
            raise ValueError(f"{name}: tensors must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(t.shape)}.")
        if t.is_floating_point() or dtype is None:
            return t, False
        return as_compute(t, dtype), False
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: unsupported array dtype {arr.dtype}.")
    np_dtype = np.float32 if dtype in (torch.float32, torch.float16, torch.bfloat16) else np.float64
    if arr.dtype.kind in "ui":
        arr = arr.astype(np_dtype) / np_dtype(np.iinfo(arr.dtype).max)
    else:
        arr = arr.astype(np_dtype, copy=False)
    if arr.ndim == 2:
        t = torch.from_numpy(arr)[None, None]
    elif arr.ndim == 3 and arr.shape[-1] == 3:
        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))[None]
    elif arr.ndim == 3:
        t = torch.from_numpy(arr)[None, None]
    else:
        raise ValueError(f"{name}: arrays must be (H, W), (H, W, 3) or a (D, H, W) volume, got shape {arr.shape}.")
    return t, True


def _prepare(pred: Any, ref: Any, level: int, max_level: int, dtype: torch.dtype | None):
    p, p_np = _to_batched(pred, "pred", dtype)
    r, r_np = _to_batched(ref, "ref", dtype)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {tuple(p.shape)} and {tuple(r.shape)}.")
    if p.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {p.shape[1]}.")
    if not 0 <= level <= max_level:
        raise ValueError(f"level must be in [0, max_level={max_level}], got level={level}.")
    spatial = tuple(p.shape[2:])
    need = min_size_for_level(level)
    if min(spatial) < need:
        raise ValueError(
            f"image of spatial size {spatial} is too small for LaSSIM at level {level}: "
            f"every side needs at least {need} samples (a {WINDOW}-sample window at 1/{2**level} "
            "resolution); use a lower level."
        )
    if dtype is None:
        dtype = torch.promote_types(compute_dtype(p), compute_dtype(r))
    if p.is_floating_point() or p.dtype != r.dtype:  # an integer pair of one dtype converts piece by piece
        p, r = (t.to(dtype) if t.is_floating_point() else as_compute(t, dtype) for t in (p, r))
    r = r.to(device=p.device)
    return p, r, p_np and r_np


def _bands(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int, path: PathChoice):
    b = p.shape[0]
    lp, lr = band_pair(p, r, level, max_level, path).split(b)
    high = torch.maximum(lp.reshape(b, -1).amax(dim=1), lr.reshape(b, -1).amax(dim=1))
    low = torch.minimum(lp.reshape(b, -1).amin(dim=1), lr.reshape(b, -1).amin(dim=1))
    return lp, lr, high - low


def _check_finite(scores: torch.Tensor, p: torch.Tensor, r: torch.Tensor) -> None:
    """Raise if an input holds NaN or Inf.

    Every input sample reaches the band through positive weights, so a NaN or Inf anywhere
    makes the score non-finite: the inputs are scanned only when a score is.
    """
    if bool(torch.isfinite(scores).all()):
        return
    for name, t in (("pred", p), ("ref", r)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values.")


def lassim(
    pred: Any,
    ref: Any,
    level: int = 3,
    max_level: int = 5,
    dtype: torch.dtype | None = None,
    path: PathChoice = "auto",
) -> torch.Tensor | float:
    """LaSSIM score between an enhanced (or degraded) image and its reference.

    Args:
        pred: enhanced image. A tensor ``(B, C, H, W)`` / ``(B, C, D, H, W)`` with C 1 or 3,
            or an array ``(H, W)``, ``(H, W, 3)`` or ``(D, H, W)``; integer arrays are
            scaled by their dtype's maximum (the score is invariant to that scaling).
        ref: reference (input) image, same shape as ``pred``.
        level: Laplacian band, counted in halvings from full resolution (paper: 3).
        max_level: pyramid depth; ``level == max_level`` uses the coarsest Gaussian level.
        dtype: computation dtype. By default arrays use float64 (the reference pipeline to 1e-12)
            and tensors their own floating dtype, integer tensors float32 (within about 1e-7 of
            the reference).
        path: ``"auto"``, ``"reference"`` or ``"fast"``: which computation of the band runs
            (:func:`napari_uspmie.metric.bands.fast_path_applies`).

    Returns:
        ``(B,)`` tensor of scores for tensor input, a Python float for arrays.

    Raises:
        ValueError: shape or channel mismatch, NaN/Inf, image too small for ``level``, a ``path``
            that cannot serve the input.
    """
    p, r, numpy_in = _prepare(pred, ref, level, max_level, dtype)
    with shared_core_threads(p.device):
        lp, lr, data_range = _bands(p, r, level, max_level, path)
        scores = ssim_map(lp, lr, data_range).flatten(1).mean(dim=1)
    _check_finite(scores, p, r)
    return float(scores[0]) if numpy_in else scores


def lassim_map(
    pred: Any,
    ref: Any,
    level: int = 3,
    max_level: int = 5,
    upsample: bool = True,
    return_score: bool = False,
    dtype: torch.dtype | None = None,
    path: PathChoice = "auto",
):
    """LaSSIM heatmap: the SSIM map at the Laplacian band, upsampled to the image size.

    Low values mark where structure differs between ``pred`` and ``ref``.

    Args:
        pred, ref, level, max_level, dtype, path: as for :func:`lassim`.
        upsample: resize the band-resolution map to the input's spatial size (linear
            interpolation); ``False`` returns it at ``1 / 2**level`` resolution.
        return_score: also return the LaSSIM score computed from the same bands.

    Returns:
        ``(B, 1, *spatial)`` tensor for tensor input, ``(H, W)`` / ``(D, H, W)`` array for
        array input; with ``return_score``, a ``(map, score)`` pair.

    Raises:
        ValueError: as for :func:`lassim`.
    """
    p, r, numpy_in = _prepare(pred, ref, level, max_level, dtype)
    pad = (WINDOW - 1) // 2
    with shared_core_threads(p.device):
        lp, lr, data_range = _bands(p, r, level, max_level, path)
        heat = ssim_map(lp, lr, data_range, full=True)
        inner = tuple(slice(pad, s - pad) for s in heat.shape[2:])
        scores = heat[(slice(None), slice(None)) + inner].flatten(1).mean(dim=1)
        _check_finite(scores, p, r)
        if upsample:
            mode = "bilinear" if heat.ndim == 4 else "trilinear"
            heat = F.interpolate(heat, size=p.shape[2:], mode=mode, align_corners=False)
    if numpy_in:
        out = heat[0, 0].detach().cpu().numpy()
        return (out, float(scores[0])) if return_score else out
    return (heat, scores) if return_score else heat
