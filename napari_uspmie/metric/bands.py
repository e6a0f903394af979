"""The Laplacian bands LaSSIM compares: luma, then one band, for a batch of image pairs.

Two paths compute the same band. The reference path (:mod:`napari_uspmie.metric.pyramid`) serves
every input: any dtype and device, 2D or 3D, differentiable; in float64 it equals OpenCV to 1e-12.
The fast path (:mod:`napari_uspmie.metric.pyramid_filters`) serves large 2D float32 CPU batches
without gradients: the Gaussian levels down to the band by depthwise convolutions, the luma inside
the first row pass (each RGB image is read once, no full-size gray image is written); it differs
from the reference path by float32 rounding only. :func:`fast_path_applies` is the one place that
chooses between them. On a CPU both take the batch to the band's Gaussian level in pieces that
stay in cache (:func:`pairs_per_piece`); the band itself then runs on the whole batch at once.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.metric.pyramid import laplacian_residual, pyr_down, pyramid_sizes
from napari_uspmie.metric.pyramid_filters import gaussian_level

__all__ = [
    "FAST_PATH_MIN_SAMPLES",
    "PIECE_BYTES",
    "PathChoice",
    "to_gray",
    "compute_dtype",
    "as_compute",
    "fast_path_applies",
    "pairs_per_piece",
    "band_pair",
]

#: Smallest batch the fast path takes, in samples of the first row pass (half the pixels) of the
#: ``pred`` batch: below, its many small calls cost more than they save.
FAST_PATH_MIN_SAMPLES = 2**19
#: Largest intermediate one piece of a CPU batch writes (the fast path's first row pass of the
#: ``pred`` images, the reference path's luma of the pairs): pieces stay in cache, and below glibc's
#: largest heap block (32 MiB) the allocator reuses memory instead of mapping and faulting it in.
PIECE_BYTES = 2**23

#: ``band_pair``'s ``path``: ``"auto"`` lets :func:`fast_path_applies` choose, the others force a path.
PathChoice = Literal["auto", "reference", "fast"]


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


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the band of ``x`` is computed in: its own floating dtype, float32 for integer data."""
    return x.dtype if x.is_floating_point() else torch.float32


def as_compute(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A piece of a batch as a contiguous ``dtype`` tensor; uint8 data scaled to [0, 1].

    Users hold images as uint8 ``(H, W, 3)`` arrays; stacked and permuted they are a channels-last
    uint8 batch. Converting one cache-sized piece at a time, to the layout the filters run fastest
    on, costs far less than converting the whole batch up front (and keeps no float copy of it).
    """
    out = x.to(dtype=dtype, memory_format=torch.contiguous_format)
    return out.div_(255.0) if x.dtype == torch.uint8 else out


def _piece(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A piece of the batch ready for :func:`_luma_level`: channels-last RGB (stacked ``(H, W, 3)``
    arrays) goes straight to its luma in one sequential pass, the rest through :func:`as_compute`."""
    if x.ndim == 4 and x.shape[1] == 3 and not x.is_contiguous() and x.permute(0, 2, 3, 1).is_contiguous():
        weights = torch.tensor(GRAY_WEIGHTS, dtype=dtype, device=x.device)
        gray = torch.matmul(x.permute(0, 2, 3, 1).to(dtype), weights).unsqueeze(1)
        return gray.div_(255.0) if x.dtype == torch.uint8 else gray
    return as_compute(x, dtype)


def fast_path_applies(p: torch.Tensor, r: torch.Tensor, level: int, path: PathChoice = "auto") -> bool:
    """Which path :func:`band_pair` runs for this batch and band: ``True`` for the fast path.

    Args:
        p, r: the ``pred`` and ``ref`` batches.
        level: the band.
        path: ``"auto"`` chooses the fast path for a band above full resolution of a 2D float32
            CPU batch without gradients of at least :data:`FAST_PATH_MIN_SAMPLES`, when oneDNN
            runs the depthwise convolutions (integer batches count as float32, the dtype they are
            computed in); ``"reference"`` and ``"fast"`` force one.

    Raises:
        ValueError: an unknown ``path``, or ``"fast"`` for a batch or band it cannot serve.
    """
    if path not in ("auto", "reference", "fast"):
        raise ValueError(f"path must be 'auto', 'reference' or 'fast', got {path!r}.")
    if path == "reference":
        return False
    needs_grad = torch.is_grad_enabled() and (p.requires_grad or r.requires_grad)
    serves = (
        level >= 1
        and p.ndim == 4
        and compute_dtype(p) == compute_dtype(r) == torch.float32
        and p.device.type == r.device.type == "cpu"
        and not needs_grad
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled  # without oneDNN, depthwise convolutions are slow
    )
    if path == "fast" and not serves:
        raise ValueError("the fast path serves bands above level 0 of 2D float32 CPU batches without gradients.")
    return serves and (path == "fast" or p.shape[0] * ((p.shape[2] + 1) // 2) * p.shape[3] >= FAST_PATH_MIN_SAMPLES)


def pairs_per_piece(p: torch.Tensor, fast: bool) -> int:
    """Pairs per piece of the batch ``p`` on the chosen path: the whole batch off the CPU."""
    if p.device.type != "cpu":
        return p.shape[0]
    # sized by the dtype the piece is computed in: a uint8 batch becomes float32 piece by piece
    itemsize = torch.empty((), dtype=compute_dtype(p)).element_size()
    if fast:
        largest = (p.shape[2] + 1) // 2 * p.shape[3] * itemsize
    else:
        largest = 2 * math.prod(p.shape[2:]) * itemsize
    # an integer piece's float copy (C channels) must fit too
    if not p.is_floating_point():
        largest = max(largest, p.shape[1] * math.prod(p.shape[2:]) * itemsize)
    return max(1, PIECE_BYTES // largest)


def _luma_level(x: torch.Tensor, level: int, fast: bool) -> torch.Tensor:
    """Gaussian level ``level`` of the luma of ``x`` on the chosen path."""
    if fast:
        return gaussian_level(x, level, torch.tensor(GRAY_WEIGHTS) if x.shape[1] == 3 else None)
    x = to_gray(x)
    for _ in range(level):
        x = pyr_down(x)
    return x


def band_pair(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int, path: PathChoice = "auto") -> torch.Tensor:
    """Laplacian band at ``level`` of the luma of ``pred`` then ``ref``: ``(2B, 1, ...)``.

    Both paths take the Gaussian level ``level`` of ``pred`` and of ``ref`` piece by piece
    (:func:`pairs_per_piece`), each straight into its slot of the batch's level (no full-size
    concatenation), then the band of the whole batch at once (its many small operator calls
    paid once per batch).

    Args:
        p, r: ``(B, C, *spatial)`` batches of one dtype (floating, or integer: computed in float32,
            uint8 scaled to [0, 1]), any memory layout, C 1 or 3.
        level, max_level: as for :func:`napari_uspmie.metric.pyramid.laplacian_residual`.
        path: as for :func:`fast_path_applies`.

    Returns:
        The ``pred`` bands then the ``ref`` bands along the first axis.

    Raises:
        ValueError: ``level`` outside ``[0, max_level]``, or a ``path`` :func:`fast_path_applies` refuses.
    """
    if not 0 <= level <= max_level:
        raise ValueError(f"level must be in [0, max_level={max_level}], got {level}.")
    fast = fast_path_applies(p, r, level, path)
    dtype = compute_dtype(p)
    b, n = p.shape[0], pairs_per_piece(p, fast)
    base = p.new_empty((2 * b, 1, *pyramid_sizes(tuple(p.shape[2:]), level)[-1]), dtype=dtype)
    for start in range(0, b, n):
        stop = min(start + n, b)
        base[start:stop].copy_(_luma_level(_piece(p[start:stop], dtype), level, fast))
        base[b + start : b + stop].copy_(_luma_level(_piece(r[start:stop], dtype), level, fast))
    # The band at ``level`` of an image is the band at 0 of its Gaussian level ``level``.
    return laplacian_residual(base, 0, max_level - level)
