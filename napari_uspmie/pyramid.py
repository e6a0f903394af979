"""Gaussian and Laplacian pyramids that reproduce OpenCV's ``pyrDown``/``pyrUp``.

One implementation serves the LaSSIM metric, its heatmap and the Laplacian
perceptual loss. Works on 2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` tensors,
is differentiable, and keeps the input's device and floating dtype.

OpenCV conventions reproduced exactly:

* kernel ``outer([1, 4, 6, 4, 1]) / 256`` (separable ``[1, 4, 6, 4, 1] / 16``);
* ``BORDER_REFLECT_101`` (``torch`` ``"reflect"`` padding);
* ``pyrDown`` keeps every second sample starting at 0, output ``ceil(n / 2)``;
* ``pyrUp`` zero-inserts to twice the coarse size, filters with the kernel times
  ``2 ** ndim`` (``4`` in 2D) and, for an odd finer size, drops the last sample;
  this is what OpenCV computes for an odd ``dstsize`` (filtering the odd-sized
  zero-inserted image with reflect-101 would differ in the last sample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "BINOMIAL_TAPS",
    "pyr_down",
    "pyr_up",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "laplacian_residual",
    "pyramid_sizes",
]

BINOMIAL_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
_PAD = 2


def _taps(like: torch.Tensor, gain: float) -> torch.Tensor:
    taps = torch.tensor(BINOMIAL_TAPS, dtype=like.dtype, device=like.device)
    return taps * (gain / 16.0)


def _separable_filter(x: torch.Tensor, gain: float, stride: int) -> torch.Tensor:
    """Filter every spatial axis of ``x`` with the binomial taps (reflect-101 border).

    Channels are folded into the batch so one single-channel convolution serves any C.
    """
    spatial = x.shape[2:]
    nd = len(spatial)
    b, c = x.shape[:2]
    y = x.reshape(b * c, 1, *spatial)
    taps = _taps(y, gain)
    conv = F.conv2d if nd == 2 else F.conv3d
    for axis in range(nd):
        pad = [0, 0] * nd
        # F.pad lists the last axis first.
        pad[2 * (nd - 1 - axis)] = _PAD
        pad[2 * (nd - 1 - axis) + 1] = _PAD
        y = F.pad(y, pad, mode="reflect")
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = len(BINOMIAL_TAPS)
        strides = [1] * nd
        strides[axis] = stride
        y = conv(y, taps.reshape(shape), stride=tuple(strides))
    return y.reshape(b, c, *y.shape[2:])


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur and halve every spatial axis, like ``cv2.pyrDown``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating tensor, every spatial size >= 3.

    Returns:
        Tensor with spatial sizes ``ceil(n / 2)``.
    """
    return _separable_filter(x, gain=1.0, stride=2)


def pyr_up(x: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Upsample to ``size`` like ``cv2.pyrUp`` with ``dstsize=size``.

    Args:
        x: ``(B, C, *spatial)`` floating tensor.
        size: target spatial size; each entry must be ``2n`` or ``2n - 1``, with ``n >= 2``.

    Returns:
        Tensor of shape ``(B, C, *size)``.
    """
    size = tuple(int(s) for s in size)
    spatial = tuple(x.shape[2:])
    if len(size) != len(spatial) or any(not 2 * n - 1 <= s <= 2 * n for n, s in zip(spatial, size, strict=True)):
        raise ValueError(f"pyr_up cannot map spatial size {spatial} to {size}.")
    up = x.new_zeros(*x.shape[:2], *(2 * n for n in spatial))
    index = (slice(None), slice(None)) + tuple(slice(None, None, 2) for _ in size)
    up[index] = x
    out = _separable_filter(up, gain=2.0, stride=1)
    if tuple(out.shape[2:]) != size:
        out = out[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
    return out


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
    """
    if not 0 <= level <= max_level:
        raise ValueError(f"level must be in [0, max_level={max_level}], got {level}.")
    if level == max_level:
        return gaussian_pyramid(x, max_level)[-1]
    gauss = gaussian_pyramid(x, level + 1)
    return gauss[level] - pyr_up(gauss[level + 1], gauss[level].shape[2:])
