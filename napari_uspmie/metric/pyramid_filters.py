"""pyrDown's filter-and-decimate passes as depthwise convolutions: the CPU float32 fast path.

The shifted-view sums of :mod:`napari_uspmie.metric.pyramid` make one pass over memory per filter
tap. A depthwise convolution makes one pass for all five taps and vectorises across the
image, so on a CPU (oneDNN) in float32 it is several times faster:

* rows (``dim=2``, the outer axis): the image is viewed, without a copy, as a channels-last
  tensor whose channels are its columns; a ``(5, 1)`` stride-2 depthwise kernel then filters
  every column at once. The same pass can first take a weighted sum of the input channels
  (luma) with a ``(C, 5)`` kernel over the channel planes, so the full-resolution image is
  read once and no full-size intermediate is written;
* columns (``dim=3``, the contiguous axis): every row becomes one channel of a ``(1, 5)``
  stride-2 depthwise convolution.

The convolutions pad with zeros; the first and last outputs of each pass, whose taps reach
past the border, then get the taps ``BORDER_REFLECT_101`` puts there. The kernel is
``[1, 4, 6, 4, 1] / 16`` (exact in binary), so results differ from the shifted-view sums only
by float32 rounding (about 1e-7 of the image's range).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["BINOMIAL_TAPS", "reflect_101", "mix_channels", "conv_passes_apply", "down_rows", "down_columns"]

BINOMIAL_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
_PAD = len(BINOMIAL_TAPS) // 2


def reflect_101(i: int, n: int) -> int:
    """Index ``i`` of an axis of length ``n`` extended by ``BORDER_REFLECT_101`` (one reflection)."""
    i = -i if i < 0 else i
    return 2 * (n - 1) - i if i >= n else i


def mix_channels(x: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, C, ...)`` to ``(B, 1, ...)``: the sum of the channels weighted by ``weights`` ``(C,)``.

    ``out``: a contiguous tensor of ``B * prod(spatial)`` elements to write into (no gradients then).
    """
    # A (C,) @ (B, C, N) product reads the image once: several times faster than a tensordot.
    shape = (x.shape[0], 1, *x.shape[2:])
    if out is None:
        return torch.matmul(weights, x.flatten(2)).reshape(shape)
    torch.matmul(weights, x.flatten(2), out=out.view(x.shape[0], -1))
    return out.view(shape)


def conv_passes_apply(x: torch.Tensor) -> bool:
    """Whether :func:`down_rows` / :func:`down_columns` serve ``x``: a 2D float32 CPU batch without gradients."""
    return (
        x.ndim == 4
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled  # without oneDNN, depthwise convolutions are slow
        and not (torch.is_grad_enabled() and x.requires_grad)
        and min(x.shape[2:]) >= 3
    )


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

    A zero-padded pass leaves those taps out; ``BORDER_REFLECT_101`` puts sample ``sample`` there.
    Only output 0 and the outputs after ``(n - 3) // 2`` have such taps.
    """
    found = []
    for out in sorted({0, *range(max(1, (n - 3) // 2 + 1), (n + 1) // 2)}):
        for k, weight in enumerate(BINOMIAL_TAPS):
            i = 2 * out + k - _PAD
            if not 0 <= i < n:
                found.append((out, reflect_101(i, n), weight / 16.0))
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
        x: the batch; :func:`conv_passes_apply` must hold.
        channel_weights: ``(C,)`` weights of a channel sum taken in the same pass (then one output channel).

    Returns:
        ``(B, C or 1, ceil(H / 2), W)`` contiguous tensor.
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
    mixed = mix_channels(x.index_select(2, torch.tensor(border, device=x.device)), cw)
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
