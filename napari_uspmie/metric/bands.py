"""The Laplacian bands LaSSIM compares: luma, then one band, for a batch of image pairs.

Two paths compute the same band. The reference path (:mod:`napari_uspmie.metric.pyramid`) serves
every input: any dtype and device, 2D or 3D, differentiable; in float64 it equals OpenCV to 1e-12.
The fast path (:mod:`napari_uspmie.metric.pyramid_filters`) serves 2D float32 and float64 CPU batches
without gradients: each axis goes down to the band's Gaussian level by banded matrix products instead
of a pass per level and tap; it differs from the reference path by rounding only.
:func:`fast_path_applies` is the one place that chooses between them. The luma of RGB stacked from
``(H, W, 3)`` arrays (channels-last) is one blocked matrix product
(:mod:`napari_uspmie.metric.interleaved_luma`). On a CPU the batch goes to the band's Gaussian
level in pieces (:func:`pairs_per_piece`); the band itself then runs on the whole batch at once.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from napari_uspmie.metric.interleaved_luma import interleaved_luma, is_interleaved_rgb
from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.metric.pyramid import laplacian_residual, pyr_down, pyramid_sizes
from napari_uspmie.metric.pyramid_filters import gaussian_level

__all__ = [
    "PIECE_BYTES",
    "PathChoice",
    "to_gray",
    "compute_dtype",
    "as_compute",
    "fast_path_applies",
    "pairs_per_piece",
    "band_pair",
]

#: Largest intermediate one piece of a CPU batch writes (the lumas of its pairs): below glibc's
#: largest heap block (32 MiB), the allocator reuses memory instead of mapping and faulting it in.
PIECE_BYTES = 2**24

#: ``band_pair``'s ``path``: ``"auto"`` lets :func:`fast_path_applies` choose, the others force a path.
PathChoice = Literal["auto", "reference", "fast"]


def to_gray(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 3, ...)`` RGB to ``(B, 1, ...)`` luma with skimage's weights; 1 channel passes.

    Args:
        x: the batch.
        out: optional contiguous ``(B, 1, ...)`` tensor to write an RGB batch's luma into (no gradients).

    Raises:
        ValueError: neither 1 nor 3 channels.
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {x.shape[1]}.")
    # A (3,) @ (B, 3, N) product reads the image once: several times faster than a tensordot.
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device)
    if out is not None:
        torch.matmul(weights, x.flatten(2), out=out.view(x.shape[0], -1))
        return out
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


def _needs_grad(p: torch.Tensor, r: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (p.requires_grad or r.requires_grad)


def fast_path_applies(p: torch.Tensor, r: torch.Tensor, level: int, path: PathChoice = "auto") -> bool:
    """Which path :func:`band_pair` runs for this batch and band: ``True`` for the fast path.

    Args:
        p, r: the ``pred`` and ``ref`` batches.
        level: the band.
        path: ``"auto"`` chooses the fast path for a band above full resolution of a 2D float32 or
            float64 CPU batch without gradients, of any size (integer batches count as float32, the
            dtype they are computed in); ``"reference"`` and ``"fast"`` force one.

    Raises:
        ValueError: an unknown ``path``, or ``"fast"`` for a batch or band it cannot serve.
    """
    if path not in ("auto", "reference", "fast"):
        raise ValueError(f"path must be 'auto', 'reference' or 'fast', got {path!r}.")
    if path == "reference":
        return False
    serves = (
        level >= 1
        and p.ndim == 4
        and compute_dtype(p) == compute_dtype(r) in (torch.float32, torch.float64)
        and p.device.type == r.device.type == "cpu"
        and not _needs_grad(p, r)
    )
    if path == "fast" and not serves:
        raise ValueError(
            "the fast path serves bands above level 0 of 2D float32 or float64 CPU batches without gradients."
        )
    return serves


def pairs_per_piece(p: torch.Tensor) -> int:
    """Pairs per piece of the batch ``p``: the whole batch off the CPU."""
    if p.device.type != "cpu":
        return p.shape[0]
    # sized by the dtype the piece is computed in: a uint8 batch becomes float32 piece by piece
    itemsize = torch.empty((), dtype=compute_dtype(p)).element_size()
    largest = 2 * math.prod(p.shape[2:]) * itemsize  # the lumas of a pair
    if not p.is_floating_point() and not is_interleaved_rgb(p):  # a float copy of the piece (C channels) too
        largest = max(largest, p.shape[1] * math.prod(p.shape[2:]) * itemsize)
    return max(1, PIECE_BYTES // largest)


def _luma_into(x: torch.Tensor, dtype: torch.dtype, out: torch.Tensor) -> None:
    """Write the luma of the RGB piece ``x`` into ``out`` (no gradients)."""
    if is_interleaved_rgb(x):
        interleaved_luma(x, dtype, out=out)
        return
    to_gray(as_compute(x, dtype), out=out)


def _level(x: torch.Tensor, level: int, fast: bool) -> torch.Tensor:
    """Gaussian level ``level`` of the single-channel ``x`` on the chosen path."""
    if fast:
        return gaussian_level(x, level) if level > 0 else x
    for _ in range(level):
        x = pyr_down(x)
    return x


def band_pair(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int, path: PathChoice = "auto") -> torch.Tensor:
    """Laplacian band at ``level`` of the luma of ``pred`` then ``ref``: ``(2B, 1, ...)``.

    The batch goes to the Gaussian level ``level`` piece by piece (:func:`pairs_per_piece`), each
    piece straight into its slot of the batch's level, then the band of the whole batch runs at once
    (its many small operator calls paid once per batch). Without gradients, the lumas of a piece's
    ``pred`` and ``ref`` images go into one buffer, allocated once (a fresh allocation costs its page
    faults every time), and the passes to the level run once for both.

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
    b, n = p.shape[0], pairs_per_piece(p)
    base = p.new_empty((2 * b, 1, *pyramid_sizes(tuple(p.shape[2:]), level)[-1]), dtype=dtype)
    shared = p.shape[1] == 3 and not _needs_grad(p, r)
    gray = p.new_empty((2 * n, 1, *p.shape[2:]), dtype=dtype) if shared else None
    for start in range(0, b, n):
        stop = min(start + n, b)
        if gray is not None:
            k = stop - start
            _luma_into(p[start:stop], dtype, gray[:k])
            _luma_into(r[start:stop], dtype, gray[k : 2 * k])
            both = _level(gray[: 2 * k], level, fast)
            base[start:stop].copy_(both[:k])
            base[b + start : b + stop].copy_(both[k:])
            continue
        base[start:stop].copy_(_level(to_gray(as_compute(p[start:stop], dtype)), level, fast))
        base[b + start : b + stop].copy_(_level(to_gray(as_compute(r[start:stop], dtype)), level, fast))
    # The band at ``level`` of an image is the band at 0 of its Gaussian level ``level``.
    band = laplacian_residual(base, 0, max_level - level)
    if not fast or level == max_level:
        return band
    # A flat image's band is exactly 0 on the reference path, where the products' rounding leaves noise of a
    # few rounding units: bands that small are checked against their image, and zeroed if it is flat.
    noise = base.flatten(1).abs().amax(dim=1) * (64 * torch.finfo(dtype).eps)
    for i in (band.flatten(1).abs().amax(dim=1) <= noise).nonzero().flatten().tolist():
        image = p[i] if i < b else r[i - b]
        luma = to_gray(as_compute(image[None], dtype))
        if bool(luma.amin() == luma.amax()):
            band[i] = 0
    return band
