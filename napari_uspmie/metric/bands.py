"""The Laplacian bands LaSSIM compares: luma, then one band, for a batch of image pairs.

The arithmetic is :mod:`napari_uspmie.metric.pyramid`'s; this module decides how a batch goes
through it. Only the luma and the first pyramid levels touch many samples, and on a CPU they
are memory-bound, so a large CPU batch runs them on pieces that stay in cache and the much
smaller coarser levels on the whole batch at once (their many small operator calls are then
paid once per batch). In float32 without gradients the pieces run as depthwise convolutions
(:mod:`napari_uspmie.metric.pyramid_filters`): the luma is taken inside the first row pass, so each
RGB image is read once and no full-size gray image is written.
"""

from __future__ import annotations

import math

import torch

from napari_uspmie.metric.luma import GRAY_WEIGHTS
from napari_uspmie.metric.pyramid import gaussian_level, laplacian_residual, pyr_down
from napari_uspmie.metric.pyramid_filters import conv_passes_apply, mix_channels

__all__ = ["GRAY_WEIGHTS", "to_gray", "band_pair"]

#: Elements per piece when a CPU batch is processed in cache-sized pieces.
_CPU_CHUNK = 2**20
#: Image pixels from which the pieces also take pyramid level 2 (below, level 1 is already small).
_PIECE_LEVEL2_PIXELS = 2**19
#: Samples of the first row pass's output (per ``pred`` or ``ref`` batch) from which the levels
#: run as convolutions; below, the calls cost more than the passes they replace.
_CONV_MIN_ELEMENTS = 2**18
#: The same, per piece. Larger pieces mean fewer calls; above glibc's largest heap allocation
#: (32 MiB) every call would map fresh memory and fault it in again.
_CONV_CHUNK = 2**21
#: Pyramid levels computed in the pieces by convolutions.
_CONV_DEPTH = 3


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, ...)`` RGB to ``(B, 1, ...)`` luma with skimage's weights; 1 channel passes."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {x.shape[1]}.")
    return mix_channels(x, torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device))


def _use_convolutions(p: torch.Tensor) -> bool:
    if not conv_passes_apply(p):
        return False
    return p.shape[0] * ((p.shape[2] + 1) // 2) * p.shape[3] >= _CONV_MIN_ELEMENTS


def _chunks(p: torch.Tensor, r: torch.Tensor, convolutions: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split a large CPU batch into pieces of about ``_CPU_CHUNK`` elements (``_CONV_CHUNK`` first-pass samples)."""
    if p.device.type != "cpu" or p.shape[0] == 1:
        return [(p, r)]
    if convolutions:
        # The convolutions read each image once; what must stay in cache is the first pass's output.
        n = max(1, _CONV_CHUNK // max(1, (p.shape[2] + 1) // 2 * p.shape[3]))
    else:
        n = max(1, _CPU_CHUNK // max(1, p[0].numel()))
    return list(zip(p.split(n), r.split(n), strict=True))


def _gray_pair(p: torch.Tensor, r: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Luma of ``pred`` then ``ref`` in one ``(2B, 1, *spatial)`` tensor (written into ``out`` if given)."""
    b = p.shape[0]
    if p.shape[1] == 1:
        return torch.cat([p, r])
    if torch.is_grad_enabled() and (p.requires_grad or r.requires_grad):
        return torch.cat([to_gray(p), to_gray(r)])  # ``out=`` below does not record gradients
    # Both products written straight into one buffer: no concatenation pass over the full-size grays.
    if out is None:
        out = torch.empty((2, b, p[0, 0].numel()), dtype=p.dtype, device=p.device)
    out = out.view(2, b, -1)
    w = torch.tensor(GRAY_WEIGHTS, dtype=p.dtype, device=p.device)
    mix_channels(p, w, out=out[0])
    mix_channels(r, w, out=out[1])
    return out.view(2 * b, 1, *p.shape[2:])


def _levels_in_pieces(
    p: torch.Tensor, r: torch.Tensor, depth: int, convolutions: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian level ``depth`` of the luma of every pair, computed piece by piece (:func:`_chunks`).

    Each piece's last level goes straight into its slot of the result: a fresh full-size buffer
    per piece and a concatenation at the end cost about as much as the filtering (page faults,
    one more pass over memory). Without convolutions, each piece's luma goes through one reused
    buffer and level 2 of a large image is taken while the piece's level 1 is still in cache.

    Returns:
        The level, ``(2B, 1, ...)`` with each piece's ``pred`` then ``ref`` images side by side,
        and the index that reorders its first axis to all ``pred`` then all ``ref``.
    """
    pieces = _chunks(p, r, convolutions)
    n = pieces[0][0].shape[0]
    size = tuple(p.shape[2:])
    for _ in range(depth):
        size = tuple((s + 1) // 2 for s in size)
    level = p.new_empty((2 * p.shape[0], 1, *size))
    rgb = p.shape[1] == 3
    gray = p.new_empty((2 * n, p[0, 0].numel())) if rgb and not convolutions else None
    weights = torch.tensor(GRAY_WEIGHTS, dtype=p.dtype) if rgb else None
    pred_rows, ref_rows, start = [], [], 0
    for p_part, r_part in pieces:
        m = p_part.shape[0]
        slot = level[2 * start : 2 * start + 2 * m]
        if convolutions:
            slot[:m].copy_(gaussian_level(p_part, depth, weights))
            slot[m:].copy_(gaussian_level(r_part, depth, weights))
        else:
            pair = _gray_pair(p_part, r_part, None if gray is None else gray[: 2 * m])
            pyr_down(pair if depth == 1 else pyr_down(pair), out=slot)
        pred_rows.append(torch.arange(2 * start, 2 * start + m))
        ref_rows.append(torch.arange(2 * start + m, 2 * start + 2 * m))
        start += m
    return level, torch.cat(pred_rows + ref_rows).to(p.device)


def band_pair(p: torch.Tensor, r: torch.Tensor, level: int, max_level: int) -> torch.Tensor:
    """Laplacian band at ``level`` of the luma of ``pred`` then ``ref``: ``(2B, 1, ...)``.

    Args:
        p, r: ``(B, C, *spatial)`` batches of one floating dtype, C 1 or 3.
        level, max_level: as for :func:`napari_uspmie.metric.pyramid.laplacian_residual`.

    Returns:
        The ``pred`` bands then the ``ref`` bands along the first axis.
    """
    needs_grad = torch.is_grad_enabled() and (p.requires_grad or r.requires_grad)
    convolutions = not needs_grad and _use_convolutions(p)
    if level == 0 or needs_grad or (len(_chunks(p, r, convolutions)) == 1 and not convolutions):
        return laplacian_residual(_gray_pair(p, r), level, max_level)
    if convolutions:
        depth = min(level, _CONV_DEPTH)
    else:
        # Level 2 in the pieces too when a level-1 image is large (its passes then run in cache).
        depth = 2 if level >= 2 and math.prod(p.shape[2:]) >= _PIECE_LEVEL2_PIXELS else 1
    base, order = _levels_in_pieces(p, r, depth, convolutions)
    # The band at ``level`` of the image is the band at ``level - depth`` of its Gaussian level ``depth``.
    return laplacian_residual(base, level - depth, max_level - depth).index_select(0, order)
