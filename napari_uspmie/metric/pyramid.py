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

Both filters are separable and run one axis at a time on shifted views of the data
(polyphase form), which computes only the samples that are kept. Large 2D float32 CPU
images without gradients take ``pyrDown`` as depthwise convolutions instead
(:mod:`napari_uspmie.metric.pyramid_filters`; the same arithmetic, one pass per axis, float32
rounding apart).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_uspmie.metric.pyramid_filters import (
    BINOMIAL_TAPS,
    conv_passes_apply,
    down_columns,
    down_rows,
    mix_channels,
    reflect_101,
)

__all__ = [
    "BINOMIAL_TAPS",
    "pyr_down",
    "gaussian_level",
    "pyr_up",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "laplacian_residual",
    "pyramid_sizes",
]

_PAD = len(BINOMIAL_TAPS) // 2
#: Elements from which ``pyr_down`` without gradients skips the padded copy (below, the few extra
#: small operations for the borders cost more than the copy they save).
NO_PAD_MIN_ELEMENTS = 1 << 17
#: Elements from which a float32 CPU ``pyr_down`` without gradients runs as depthwise convolutions
#: (:mod:`napari_uspmie.metric.pyramid_filters`); below, the shifted-view sums cost less than the calls.
CONV_MIN_ELEMENTS = 1 << 18


def _every_second(x: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + 2 * count - 1, 2)
    return x[tuple(index)]


def _down_axis(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Unnormalised binomial filter ``[1, 4, 6, 4, 1]`` and decimation along ``dim`` of an axis padded by 2.

    Shifted strided views and fused in-place sums replace a strided convolution: the same
    arithmetic, several times faster on CPU (float64 and single-channel convolutions have no
    fast kernels there). Only the kept samples are computed. The ``1/16`` per axis is left to
    the caller, which applies it once for all axes (a power of two: exactly the same result).
    """
    out_size = (p.shape[dim] - 2 * _PAD + 1) // 2
    return _binomial_sum([_every_second(p, dim, k, out_size) for k in range(len(BINOMIAL_TAPS))])


def _edge_outputs(n: int, inner: int) -> list[int]:
    """Outputs of a decimated axis of length ``n`` whose taps cross a border: 0 and those after ``inner``."""
    return [0, *range(inner + 1, (n + 1) // 2)]


def _edge_index(outputs: list[int], n: int, device: torch.device) -> torch.Tensor:
    """Input samples (reflected) of the five taps of each output, output by output."""
    taps = len(BINOMIAL_TAPS)
    return torch.tensor([reflect_101(2 * i - _PAD + k, n) for i in outputs for k in range(taps)], device=device)


def _binomial_sum(tap: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``t0 + t4 + 4 t1 + 4 t3 + 6 t2``, summed in this order into a fresh tensor (so the in-place
    additions are autograd-safe and every path gives bit-identical results)."""
    return torch.add(tap[0], tap[4]).add_(tap[1], alpha=4.0).add_(tap[3], alpha=4.0).add_(tap[2], alpha=6.0)


def _down_axis_unpadded(x: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_down_axis` of ``x`` padded by reflection along ``dim``, without making the padded copy.

    The interior outputs read shifted strided views of ``x`` itself; only the one or two outputs at
    each end, whose taps cross the border, gather their reflected samples. The sums run in the
    same order as in :func:`_down_axis`, so the results are bit-identical. Writes into ``out``
    (or a new tensor): no gradients.
    """
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = (n + 1) // 2
    if out is None:
        out = x.new_empty(shape)
    elif list(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(shape)}.")
    inner = max(0, (n - 3) // 2)  # outputs 1..inner read samples 0..2 * inner + 2 <= n - 1
    if inner:
        tap = [_every_second(x, dim, k, inner) for k in range(len(BINOMIAL_TAPS))]
        o = out.narrow(dim, 1, inner)
        torch.add(tap[0], tap[4], out=o)
        o.add_(tap[1], alpha=4.0).add_(tap[3], alpha=4.0).add_(tap[2], alpha=6.0)
    ends = _edge_outputs(n, inner)
    split = list(x.shape)
    split[dim : dim + 1] = [len(ends), len(BINOMIAL_TAPS)]
    edge = _binomial_sum(x.index_select(dim, _edge_index(ends, n, x.device)).view(split).unbind(dim + 1))
    out.narrow(dim, 0, 1).copy_(edge.narrow(dim, 0, 1))
    if len(ends) > 1:
        out.narrow(dim, inner + 1, len(ends) - 1).copy_(edge.narrow(dim, 1, len(ends) - 1))
    return out


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


def pyr_down(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Blur and halve every spatial axis, like ``cv2.pyrDown``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating tensor, every spatial size >= 3.
        out: tensor of the result's shape to write into (no gradients are recorded then).

    Returns:
        Tensor with spatial sizes ``ceil(n / 2)`` (``out`` when given). float64 results equal
        OpenCV's to 1e-12; float32 ones to its rounding (about 1e-7 of the range).

    Raises:
        ValueError: ``out`` has the wrong shape, or is given while ``x`` needs gradients.
    """
    nd = x.ndim - 2
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if out is not None and needs_grad:
        raise ValueError("pyr_down(out=...) records no gradients; call it without out.")
    if x.numel() >= CONV_MIN_ELEMENTS and conv_passes_apply(x):
        y = down_columns(down_rows(x))
        if out is None:
            return y
        if out.shape != y.shape:
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(y.shape)}.")
        return out.copy_(y)
    if out is not None or (x.numel() >= NO_PAD_MIN_ELEMENTS and not needs_grad):
        # Large inputs without gradients (the metric): the padded copy costs as much as a filter pass.
        last = x.ndim - 1
        for dim in range(2, x.ndim):
            x = _down_axis_unpadded(x, dim, out if dim == last else None)
        return x.mul_(16.0**-nd)
    # torch's "reflect" is BORDER_REFLECT_101; padding every axis first equals padding each before its pass.
    x = F.pad(x, (_PAD,) * (2 * nd), mode="reflect")
    for dim in range(2, x.ndim):
        x = _down_axis(x, dim)
    # One pass for the normalisation of every axis; 16 ** -nd is a power of two, so no rounding differs.
    return x.mul_(16.0**-nd)


def gaussian_level(x: torch.Tensor, depth: int, channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian level ``depth`` of ``x``, or of the weighted sum of its channels.

    On a CPU in float32 without gradients the rows of every level are filtered first, the first
    pass summing the channels, and the columns last (:mod:`napari_uspmie.metric.pyramid_filters`): the
    image is read once, and the slower column passes run on images ``2 ** depth`` times shorter.
    The passes are linear maps of different axes, so the order does not change the result
    beyond rounding. Elsewhere: the channel sum, then :func:`pyr_down` ``depth`` times.

    Args:
        x: ``(B, C, *spatial)`` floating tensor.
        depth: number of halvings, ``>= 0``.
        channel_weights: ``(C,)`` weights; ``None`` keeps the channels.

    Returns:
        ``(B, C or 1, *spatial / 2 ** depth)`` (sizes rounded up at every halving).
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}.")
    if depth == 0 or not conv_passes_apply(x):
        y = x if channel_weights is None else mix_channels(x, channel_weights.to(x))
        for _ in range(depth):
            y = pyr_down(y)
        return y
    y = down_rows(x, channel_weights)
    for _ in range(depth - 1):
        y = down_rows(y)
    for _ in range(depth):
        y = down_columns(y)
    return y


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
    """
    if not 0 <= level <= max_level:
        raise ValueError(f"level must be in [0, max_level={max_level}], got {level}.")
    if level == max_level:
        return gaussian_pyramid(x, max_level)[-1]
    gauss = gaussian_pyramid(x, level + 1)
    return gauss[level] - pyr_up(gauss[level + 1], gauss[level].shape[2:])
