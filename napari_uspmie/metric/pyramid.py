"""Gaussian and Laplacian pyramids that reproduce OpenCV's ``pyrDown``/``pyrUp``: the reference path.

One implementation serves the LaSSIM metric, its heatmap and the Laplacian perceptual loss.
Works on 2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` tensors, is differentiable, and keeps
the input's device and floating dtype. float64 results equal OpenCV's to 1e-12.

OpenCV conventions reproduced exactly:

* kernel ``outer([1, 4, 6, 4, 1]) / 256`` (separable ``[1, 4, 6, 4, 1] / 16``);
* ``BORDER_REFLECT_101`` (``torch`` ``"reflect"`` padding);
* ``pyrDown`` keeps every second sample starting at 0, output ``ceil(n / 2)``;
* ``pyrUp`` zero-inserts to twice the coarse size, filters with the kernel times
  ``2 ** ndim`` (``4`` in 2D) and, for an odd finer size, drops the last sample;
  this is what OpenCV computes for an odd ``dstsize`` (filtering the odd-sized
  zero-inserted image with reflect-101 would differ in the last sample).

Both filters are separable and run one axis at a time on shifted views of the data
(polyphase form), which computes only the samples that are kept. The metric's one fast path
(:mod:`napari_uspmie.metric.pyramid_filters`) computes the same ``pyrDown`` another way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "BINOMIAL_TAPS",
    "pyr_down",
    "pyr_down_axis",
    "pyr_up",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "laplacian_residual",
    "pyramid_sizes",
]

#: ``pyrDown``'s separable kernel, to be divided by 16 per axis (exact in binary).
BINOMIAL_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
_PAD = len(BINOMIAL_TAPS) // 2


def _every_second(x: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + 2 * count - 1, 2)
    return x[tuple(index)]


def _down_axis(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Unnormalised binomial filter ``[1, 4, 6, 4, 1]`` and decimation along ``dim`` of an axis padded by 2.

    Shifted strided views and fused sums replace a strided convolution: the same arithmetic,
    with fast kernels in every dtype (float64 and single-channel convolutions have none on a
    CPU). Only the kept samples are computed. The ``1/16`` per axis is left to the caller,
    which applies it once for all axes (a power of two: exactly the same result).
    """
    n = (p.shape[dim] - 2 * _PAD + 1) // 2
    tap = [_every_second(p, dim, k, n) for k in range(len(BINOMIAL_TAPS))]
    # Summed into a fresh tensor, so the in-place additions are autograd-safe.
    return torch.add(tap[0], tap[4]).add_(tap[1], alpha=4.0).add_(tap[3], alpha=4.0).add_(tap[2], alpha=6.0)


def _up_axis(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Zero-insert and filter along ``dim`` (gain 2) in polyphase form, then crop to ``size``.

    On the zero-inserted axis of length ``2n`` the kernel ``[1, 4, 6, 4, 1] / 8`` touches
    only the non-zero (even) samples, so output ``2i`` is ``(x[i-1] + 6 x[i] + x[i+1]) / 8``
    and output ``2i + 1`` is ``(x[i] + x[i+1]) / 2``. Reflect-101 on the zero-inserted axis
    means ``x[-1] = x[1]`` on the left and ``x[n] = x[n-1]`` on the right.
    """
    n = x.shape[dim]
    ext = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    prev = ext.narrow(dim, 0, n)
    nxt = ext.narrow(dim, 2, n)
    even = torch.add(prev, nxt).add_(x, alpha=6.0).mul_(1.0 / 8.0)
    odd = torch.add(x, nxt).mul_(0.5)
    out = torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)
    return out if size == 2 * n else out.narrow(dim, 0, size)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur and halve every spatial axis, like ``cv2.pyrDown``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating tensor, every spatial size >= 3.

    Returns:
        Tensor with spatial sizes ``ceil(n / 2)``.
    """
    nd = x.ndim - 2
    # torch's "reflect" is BORDER_REFLECT_101; padding every axis first equals padding each before its pass.
    x = F.pad(x, (_PAD,) * (2 * nd), mode="reflect")
    for dim in range(2, x.ndim):
        x = _down_axis(x, dim)
    # One pass for the normalisation of every axis; 16 ** -nd is a power of two, so no rounding differs.
    return x.mul_(16.0**-nd)


def pyr_down_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``pyr_down`` along the spatial axis ``dim`` of a ``(B, C, *spatial)`` tensor only.

    Returns:
        The tensor with axis ``dim`` filtered and halved (``ceil(n / 2)``), the other axes untouched.
    """
    pad = [0] * (2 * (x.ndim - 2))
    at = 2 * (x.ndim - 1 - dim)  # F.pad lists the last axis first
    pad[at : at + 2] = [_PAD, _PAD]
    return _down_axis(F.pad(x, tuple(pad), mode="reflect"), dim).mul_(1.0 / 16.0)


def pyr_up(x: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Upsample to ``size`` like ``cv2.pyrUp`` with ``dstsize=size``.

    Args:
        x: ``(B, C, *spatial)`` floating tensor.
        size: target spatial size; each entry must be ``2n`` or ``2n - 1``, with ``n >= 2``.

    Returns:
        Tensor of shape ``(B, C, *size)``.

    Raises:
        ValueError: ``size`` is not a ``pyrUp`` size of ``x``'s spatial size.
    """
    size = tuple(int(s) for s in size)
    spatial = tuple(x.shape[2:])
    if len(size) != len(spatial) or any(not 2 * n - 1 <= s <= 2 * n for n, s in zip(spatial, size, strict=True)):
        raise ValueError(f"pyr_up cannot map spatial size {spatial} to {size}.")
    for dim, s in zip(range(2, x.ndim), size, strict=True):
        x = _up_axis(x, dim, s)
    return x


def pyramid_sizes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Spatial sizes of Gaussian levels ``0..levels`` for an input of spatial ``shape``."""
    sizes = [tuple(int(s) for s in shape)]
    for _ in range(levels):
        sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))
    return sizes


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[G0, G1, ..., G_levels]`` with ``G0 = x`` and ``G(k+1) = pyr_down(Gk)``."""
    pyramid = [x]
    for _ in range(levels):
        pyramid.append(pyr_down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(x: torch.Tensor, max_level: int = 5) -> list[torch.Tensor]:
    """Laplacian pyramid ordered from the coarse end, as in the LaSSIM reference code.

    Returns:
        ``[G5, G4 - up(G5), ..., G0 - up(G1)]`` for ``max_level = 5``; entry
        ``max_level - level`` is the residual at ``level``.
    """
    gauss = gaussian_pyramid(x, max_level)
    bands = [gauss[max_level]]
    for k in range(max_level - 1, -1, -1):
        bands.append(gauss[k] - pyr_up(gauss[k + 1], gauss[k].shape[2:]))
    return bands


def laplacian_residual(x: torch.Tensor, level: int = 3, max_level: int = 5) -> torch.Tensor:
    """One band of :func:`laplacian_pyramid` without building the levels it does not need.

    Args:
        x: ``(B, C, *spatial)`` floating tensor.
        level: pyramid level, ``0 <= level <= max_level``; ``level == max_level`` is ``G_max``.
        max_level: depth of the pyramid.

    Returns:
        ``G_level - pyr_up(G_level+1)`` (or ``G_max`` itself), at ``1 / 2**level`` resolution.

    Raises:
        ValueError: ``level`` outside ``[0, max_level]``.
    """
    if not 0 <= level <= max_level:
        raise ValueError(f"level must be in [0, max_level={max_level}], got {level}.")
    if level == max_level:
        return gaussian_pyramid(x, max_level)[-1]
    gauss = gaussian_pyramid(x, level + 1)
    return gauss[level] - pyr_up(gauss[level + 1], gauss[level].shape[2:])
