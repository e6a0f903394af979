"""The Laplacian bands LaSSIM compares: luma, then one band, for a batch of image pairs.

Two paths compute the same band. The reference path (:mod:`napari_uspmie.metric.pyramid`) serves
every input: any dtype and device, 2D or 3D, differentiable; in float64 it equals OpenCV to 1e-12.
The fast path (:mod:`napari_uspmie.metric.pyramid_filters`) serves 2D float32 CPU batches without
gradients: the Gaussian levels down to the band are taken by depthwise convolutions, the luma inside
the first row pass (each RGB image is read once, no full-size gray image is written), on pieces of
the batch that stay in cache; the band itself and SSIM then run on the whole batch at once. It
differs from the reference path by float32 rounding only. :func:`fast_path_applies` is the one
place that chooses between them.
"""

from __future__ import annotations

from typing import Literal

import torch

from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.metric.pyramid import laplacian_residual, pyramid_sizes
from napari_uspmie.metric.pyramid_filters import gaussian_level

__all__ = ["GRAY_WEIGHTS", "PIECE_SAMPLES", "to_gray", "fast_path_applies", "band_pair"]

#: Fast path: samples of the first row pass per piece of the batch (``pred`` and ``ref`` apart).
#: Larger pieces mean fewer calls; above glibc's largest heap block (32 MiB of float32) every call
#: would map fresh memory and fault it in again.
PIECE_SAMPLES = 2**21

Path = Literal["auto", "reference", "fast"]


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, ...)`` RGB to ``(B, 1, ...)`` luma with skimage's weights; 1 channel passes.

    Raises:
        ValueError: neither 1 nor 3 channels.
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {x.shape[1]}.")
    # A (3,) @ (B, 3, N) product reads the image once: several times faster than a tensordot.
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device)
    return torch.matmul(weights, x.flatten(2)).view(x.shape[0], 1, *x.shape[2:])


def fast_path_applies(p: torch.Tensor, r: torch.Tensor, level: int) -> bool:
    """Whether :func:`band_pair` takes the fast path for this batch and band by default.

    It does for a band above full resolution of 2D float32 CPU images without gradients when
    oneDNN runs the depthwise convolutions (without it they are slow).
    """
    needs_grad = torch.is_grad_enabled() and (p.requires_grad or r.requires_grad)
    return (
        level >= 1
        and p.ndim == 4
        and p.dtype == r.dtype == torch.float32
        and p.device.type == r.device.type == "cpu"
        and not needs_grad
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def _fast_band_pair(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int) -> torch.Tensor:
    b = p.shape[0]
    n = max(1, PIECE_SAMPLES // ((p.shape[2] + 1) // 2 * p.shape[3]))
    weights = torch.tensor(GRAY_WEIGHTS) if p.shape[1] == 3 else None
    # Each piece's level goes straight into its slot: a concatenation at the end would cost another pass.
    base = p.new_empty((2 * b, 1, *pyramid_sizes(tuple(p.shape[2:]), level)[-1]))
    for start in range(0, b, n):
        stop = min(start + n, b)
        base[start:stop].copy_(gaussian_level(p[start:stop], level, weights))
        base[b + start : b + stop].copy_(gaussian_level(r[start:stop], level, weights))
    # The band at ``level`` of the image is the band at 0 of its Gaussian level ``level``.
    return laplacian_residual(base, 0, max_level - level)


def band_pair(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int, path: Path = "auto") -> torch.Tensor:
    """Laplacian band at ``level`` of the luma of ``pred`` then ``ref``: ``(2B, 1, ...)``.

    Args:
        p, r: ``(B, C, *spatial)`` batches of one floating dtype, C 1 or 3.
        level, max_level: as for :func:`napari_uspmie.metric.pyramid.laplacian_residual`.
        path: ``"auto"`` takes the fast path where :func:`fast_path_applies`, ``"reference"``
            and ``"fast"`` force one.

    Returns:
        The ``pred`` bands then the ``ref`` bands along the first axis.

    Raises:
        ValueError: ``path="fast"`` where the fast path does not apply, or an unknown ``path``.
    """
    if path not in ("auto", "reference", "fast"):
        raise ValueError(f"path must be 'auto', 'reference' or 'fast', got {path!r}.")
    applies = fast_path_applies(p, r, level)
    if path == "fast" and not applies:
        raise ValueError("the fast path serves bands above level 0 of 2D float32 CPU batches without gradients.")
    if applies and path != "reference":
        return _fast_band_pair(p, r, level, max_level)
    return laplacian_residual(torch.cat([to_gray(p), to_gray(r)]), level, max_level)
