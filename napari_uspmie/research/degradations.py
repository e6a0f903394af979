"""Synthetic degradations used to validate LaSSIM: box blur and elastic deformation.

Both follow the tools the paper used (Albumentations ``Blur`` and ``ElasticTransform``,
which call OpenCV), re-implemented in PyTorch so that they run on any device:

* :func:`box_blur` is ``cv2.blur``: a normalised ``k x k`` box filter with the anchor at the
  kernel centre and ``BORDER_REFLECT_101`` borders, computed in floating point.
* :func:`elastic_deform` is the elastic transform of Simard et al. (2003) as Albumentations
  and imgaug define it: two displacement fields drawn uniformly from ``[-1, 1]``, smoothed by
  a Gaussian of standard deviation ``sigma`` (pixels), scaled by ``alpha`` (pixels), then the
  image is resampled bilinearly at ``(x + dx, y + dy)`` with reflect-101 borders. The random
  affine step that Albumentations 1.x adds by default (``alpha_affine``) is not part of it.

Functions accept numpy arrays ``(H, W)`` / ``(H, W, C)`` and tensors ``(H, W)``,
``(C, H, W)`` or ``(B, C, H, W)``; the result has the input's type, layout and floating dtype
(integer input comes back as float64 / float32 on the same intensity scale, not rounded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

__all__ = ["box_blur", "elastic_displacement", "elastic_deform"]


def _to_bchw(image: Any) -> tuple[torch.Tensor, Any]:
    """Bring an image to a floating ``(B, C, H, W)`` tensor and return a function undoing it."""
    if isinstance(image, torch.Tensor):
        t = image if image.is_floating_point() else image.to(torch.float32)
        if t.ndim == 2:
            return t[None, None], lambda out: out[0, 0]
        if t.ndim == 3:
            return t[None], lambda out: out[0]
        if t.ndim == 4:
            return t, lambda out: out
        raise ValueError(f"tensor images must be (H, W), (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}.")
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"unsupported image dtype {arr.dtype}.")
    dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype))
    if arr.ndim == 2:
        return t[None, None], lambda out: out[0, 0].numpy()
    if arr.ndim == 3:
        return t.permute(2, 0, 1)[None], lambda out: np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())
    raise ValueError(f"arrays must be (H, W) or (H, W, C), got shape {arr.shape}.")


def box_blur(image: Any, ksize: int | tuple[int, int]) -> Any:
    """Normalised box filter, identical to ``cv2.blur(image, (kw, kh))`` on float data.

    Args:
        image: numpy ``(H, W)`` / ``(H, W, C)`` or tensor ``(H, W)`` / ``(C, H, W)`` / ``(B, C, H, W)``.
        ksize: kernel size ``k`` or ``(kh, kw)`` (rows, columns; note OpenCV's ``ksize`` is
            ``(width, height)``). Even sizes put the anchor at ``k // 2``, as OpenCV does.

    Returns:
        The blurred image, same type and shape as ``image``.

    Raises:
        ValueError: a kernel size below 1, or an image whose side is not larger than the kernel's half.
    """
    kh, kw = (ksize, ksize) if isinstance(ksize, int) else (int(ksize[0]), int(ksize[1]))
    if kh < 1 or kw < 1:
        raise ValueError(f"blur kernel size must be >= 1, got {(kh, kw)}.")
    x, undo = _to_bchw(image)
    h, w = x.shape[-2:]
    if kh // 2 >= h or kw // 2 >= w:
        raise ValueError(f"image of size {(h, w)} is too small for a {kh}x{kw} box blur (reflect-101 border).")
    # OpenCV anchors the kernel at k // 2: k // 2 samples before, k - 1 - k // 2 after.
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    p = F.pad(x, pad, mode="reflect") if any(pad) else x  # torch "reflect" == BORDER_REFLECT_101
    # Box sums as differences of running sums: a few passes whatever the kernel size. In float64
    # the rounding error stays near 1e-16 times the row sum, far below what any test can see.
    for dim, k in ((2, kh), (3, kw)):
        n = p.shape[dim] - k + 1
        c = torch.cumsum(p, dim=dim)
        p = torch.cat([c.narrow(dim, k - 1, 1), c.narrow(dim, k, n - 1) - c.narrow(dim, 0, n - 1)], dim=dim)
    return undo(p * (1.0 / (kh * kw)))


def elastic_displacement(
    shape: tuple[int, int], alpha: float, sigma: float, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Random smooth displacement field ``(2, H, W)`` (``dy``, ``dx``) in pixels.

    Each component is i.i.d. uniform on ``[-1, 1]``, filtered by ``scipy.ndimage.gaussian_filter``
    (standard deviation ``sigma``, reflect border, truncated at 4 sigma) and multiplied by ``alpha``.

    Args:
        shape: ``(H, W)``.
        alpha: displacement scale in pixels (paper: 15 / 25 / 35).
        sigma: smoothness in pixels.
        seed: an int or a ``numpy.random.Generator`` for reproducible fields.

    Returns:
        float64 array ``(2, H, W)``.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    field = rng.uniform(-1.0, 1.0, size=(2, *shape))
    return np.stack([gaussian_filter(c, sigma, mode="reflect") * alpha for c in field])


def _remap_bilinear(x: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` (B, C, H, W) at ``(y + dy, x + dx)``, bilinear, reflect-101 outside the image."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, dtype=disp.dtype, device=disp.device).reshape(1, h, 1)
    xs = torch.arange(w, dtype=disp.dtype, device=disp.device).reshape(1, 1, w)
    # Normalised coordinates with align_corners=True: -1 and 1 are the centres of the edge
    # pixels, and grid_sample's "reflection" padding then mirrors about them (reflect-101).
    gy = (ys + disp[:, 0]) * (2.0 / max(h - 1, 1)) - 1.0
    gx = (xs + disp[:, 1]) * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def elastic_deform(
    image: Any,
    alpha: float,
    sigma: float = 2.5,
    seed: int | np.random.Generator | None = None,
    displacement: np.ndarray | torch.Tensor | None = None,
) -> Any:
    """Elastic deformation (Simard et al. 2003; Albumentations / imgaug ``ElasticTransform``).

    Args:
        image: numpy ``(H, W)`` / ``(H, W, C)`` or tensor ``(H, W)`` / ``(C, H, W)`` / ``(B, C, H, W)``.
        alpha: displacement scale in pixels (paper: 15 / 25 / 35 for low / medium / high).
        sigma: Gaussian smoothing of the random field in pixels.
        seed: int or ``numpy.random.Generator``; the same seed gives the same field, whatever
            the image type or device. Batch items get successive fields from the generator.
        displacement: a precomputed ``(2, H, W)`` or ``(B, 2, H, W)`` field (``dy``, ``dx``)
            in pixels; ``alpha``, ``sigma`` and ``seed`` are then ignored.

    Returns:
        The deformed image, same type and shape as ``image``.

    Raises:
        ValueError: a displacement field whose shape does not match the image.
    """
    x, undo = _to_bchw(image)
    b, _, h, w = x.shape
    if displacement is None:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        displacement = np.stack([elastic_displacement((h, w), alpha, sigma, rng) for _ in range(b)])
    disp = torch.as_tensor(displacement, device=x.device).to(x.dtype)
    if disp.ndim == 3:
        disp = disp.unsqueeze(0).expand(b, -1, -1, -1)
    if tuple(disp.shape) != (b, 2, h, w):
        raise ValueError(f"displacement must be (2, {h}, {w}) or ({b}, 2, {h}, {w}), got {tuple(disp.shape)}.")
    return undo(_remap_bilinear(x, disp))
