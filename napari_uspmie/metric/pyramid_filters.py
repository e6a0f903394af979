"""The fast path's pyrDown: filter-and-decimate passes as depthwise convolutions (2D, float32, CPU).

The shifted-view sums of the reference path (:mod:`napari_uspmie.metric.pyramid`) make one pass
over memory per filter tap. A depthwise convolution makes one pass for all five taps and
vectorises across the image (oneDNN):

* rows (``dim=2``, the outer axis): the image is viewed, without a copy, as a channels-last
  tensor whose channels are its columns; a ``(5, 1)`` stride-2 depthwise kernel then filters
  every column at once. The same pass can first take a weighted sum of the input channels
  (luma) with a ``(C, 5)`` kernel over the channel planes, so the full-resolution image is
  read once and no full-size intermediate is written;
* columns (``dim=3``, the contiguous axis): every row becomes one channel of a ``(1, 5)``
  stride-2 depthwise convolution.

The convolutions pad with zeros; the first and last outputs of each pass, whose taps reach
past the border, then get the taps ``BORDER_REFLECT_101`` puts there. The kernel is
``[1, 4, 6, 4, 1] / 16`` (exact in binary), so results differ from the reference path only by
float32 rounding (about 1e-7 of the image's range). Every function here expects what
:func:`napari_uspmie.metric.bands.fast_path_applies` checks: a ``(B, C, H, W)`` float32 CPU
tensor without gradients, every side at least 3.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from napari_uspmie.metric.pyramid import BINOMIAL_TAPS

__all__ = ["down_rows", "down_columns", "gaussian_level"]

_PAD = len(BINOMIAL_TAPS) // 2


@lru_cache(maxsize=64)
def _kernel(kind: str, groups: int, channel_weights: tuple[float, ...] = ()) -> torch.Tensor:
    """The float32 depthwise kernel of a pass, built once per shape (building it costs as much as a small pass).

    ``kind``: ``"rows"`` ``(groups, 1, 5, 1)``, ``"mixed rows"`` ``(groups, 1, C, 5)`` or ``"columns"``
    ``(groups, 1, 1, 5)``; channels-last for the row passes, whose input is channels-last.
    """
    taps = torch.tensor(BINOMIAL_TAPS, dtype=torch.float32) / 16.0
    if kind == "rows":
        return taps.view(1, 1, 5, 1).expand(groups, 1, 5, 1).contiguous(memory_format=torch.channels_last)
    if kind == "mixed rows":
        mixed = torch.tensor(channel_weights, dtype=torch.float32).view(-1, 1) * taps.view(1, 5)
        return mixed.view(1, 1, -1, 5).expand(groups, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    return taps.view(1, 1, 1, 5).expand(groups, 1, 1, 5).contiguous()


@lru_cache(maxsize=256)
def _reflected_taps(n: int) -> tuple[tuple[int, int, float], ...]:
    """``(output, sample, weight)`` of every tap of a decimated axis of length ``n`` that falls outside it.

    A zero-padded pass leaves those taps out; ``BORDER_REFLECT_101`` puts sample ``sample`` there
    (one reflection: ``-i`` before the start, ``2 (n - 1) - i`` past the end). Only output 0 and
    the outputs after ``(n - 3) // 2`` have such taps.
    """
    found = []
    for out in sorted({0, *range(max(1, (n - 3) // 2 + 1), (n + 1) // 2)}):
        for k, weight in enumerate(BINOMIAL_TAPS):
            i = 2 * out + k - _PAD
            if i < 0:
                found.append((out, -i, weight / 16.0))
            elif i >= n:
                found.append((out, 2 * (n - 1) - i, weight / 16.0))
    return tuple(found)


def _add_reflected_taps(
    out: torch.Tensor, samples: torch.Tensor, dim: int, n: int, index_of: dict[int, int] | None = None
) -> None:
    """Add the reflected border taps to a zero-padded pass ``out`` of an axis of length ``n``.

    ``samples`` holds input sample ``i`` along ``dim`` at ``index_of[i]`` (at ``i`` without ``index_of``).
    """
    for o, i, weight in _reflected_taps(n):
        j = i if index_of is None else index_of[i]
        out.narrow(dim, o, 1).add_(samples.narrow(dim, j, 1), alpha=weight)


def down_rows(x: torch.Tensor, channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binomial filter and decimation of the rows (``dim=2``) of a ``(B, C, H, W)`` float32 CPU tensor.

    Args:
        x: the batch.
        channel_weights: ``(C,)`` weights of a channel sum taken in the same pass (then one output channel).

    Returns:
        ``(B, C or 1, ceil(H / 2), W)`` contiguous tensor.

    Raises:
        ValueError: ``channel_weights`` does not have one weight per channel.
    """
    x = x.contiguous()
    b, c, h, w = x.shape
    out_h = (h + 1) // 2
    if channel_weights is None:
        # (B*C, W, H, 1) with channels (the columns) innermost: the image as it lies in memory.
        view = x.as_strided((b * c, w, h, 1), (h * w, 1, w, w))
        y = F.conv2d(view, _kernel("rows", w), stride=(2, 1), padding=(_PAD, 0), groups=w)
        out = y.squeeze(3).transpose(1, 2).reshape(b, c, out_h, w)
        _add_reflected_taps(out, x, 2, h)
        return out
    cw = channel_weights.to(x.dtype)
    if cw.shape != (c,):
        raise ValueError(f"channel_weights must have shape ({c},), got {tuple(cw.shape)}.")
    # (B, W, C, H): the channel planes form a second spatial axis that the kernel spans whole.
    view = x.as_strided((b, w, c, h), (c * h * w, 1, h * w, w))
    kernel = _kernel("mixed rows", w, tuple(cw.tolist()))
    y = F.conv2d(view, kernel, stride=(1, 2), padding=(0, _PAD), groups=w)
    out = y.squeeze(2).transpose(1, 2).reshape(b, 1, out_h, w)
    border = sorted({i for _, i, _ in _reflected_taps(h)})
    rows = x.index_select(2, torch.tensor(border, device=x.device))
    mixed = torch.matmul(cw, rows.flatten(2)).view(b, 1, len(border), w)  # the luma of the border rows only
    _add_reflected_taps(out, mixed, 2, h, {i: k for k, i in enumerate(border)})
    return out


def down_columns(x: torch.Tensor) -> torch.Tensor:
    """Binomial filter and decimation of the columns (``dim=3``) of a ``(B, C, H, W)`` float32 CPU tensor.

    Returns:
        ``(B, C, H, ceil(W / 2))`` contiguous tensor.
    """
    x = x.contiguous()
    b, c, h, w = x.shape
    # Rows of one image as the channels, images as the batch: the kernel's size follows the image's
    # height, not the batch's.
    y = F.conv2d(x.view(b * c, h, 1, w), _kernel("columns", h), stride=(1, 2), padding=(0, _PAD), groups=h)
    out = y.view(b, c, h, (w + 1) // 2)
    _add_reflected_taps(out, x, 3, w)
    return out


def gaussian_level(x: torch.Tensor, depth: int, channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian level ``depth`` of ``x``, or of the weighted sum of its channels.

    The rows of every level are filtered first, the first pass summing the channels, and the
    columns last: the image is read once, and the slower column passes run on images
    ``2 ** depth`` times shorter. The passes are linear maps of different axes (reflect-101
    borders are per axis too), so the order changes the result only by rounding.

    Args:
        x: ``(B, C, H, W)`` float32 CPU tensor.
        depth: number of halvings, ``>= 1``.
        channel_weights: ``(C,)`` weights; ``None`` keeps the channels.

    Returns:
        ``(B, C or 1, H / 2 ** depth, W / 2 ** depth)`` (sizes rounded up at every halving).

    Raises:
        ValueError: ``depth`` below 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    y = down_rows(x, channel_weights)
    for _ in range(depth - 1):
        y = down_rows(y)
    for _ in range(depth):
        y = down_columns(y)
    return y
