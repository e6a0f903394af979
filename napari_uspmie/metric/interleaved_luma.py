"""Luma of interleaved RGB: the batch users build by stacking ``(H, W, 3)`` arrays and permuting.

Such a batch is ``(B, 3, H, W)`` with channels-last memory: the three samples of a pixel lie side by
side. A weighted sum over that innermost axis of length 3 is a matrix-vector product with a
3-long inner dimension, which BLAS runs at a fraction of its speed, and strided views are no
better. Here ``BLOCK`` neighbouring pixels form one row of a matrix that multiplies a
block-diagonal ``(3 BLOCK, BLOCK)`` matrix of the weights: an ordinary matrix product (a few
times faster), each pixel still the sum of its own three samples. Integer data is converted
one image at a time, so no float copy of the batch is ever held.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = ["BLOCK", "is_interleaved_rgb", "interleaved_luma"]

#: Pixels per row of the blocked product: large enough for a fast matrix kernel, small enough that
#: the zeros of the block-diagonal matrix cost less than they save.
BLOCK = 16


def is_interleaved_rgb(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 2D RGB batch whose pixels' samples are adjacent in memory (channels-last)."""
    return x.ndim == 4 and x.shape[1] == 3 and x.permute(0, 2, 3, 1).is_contiguous() and not x.is_contiguous()


@lru_cache(maxsize=16)
def _block_weights(scale: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights times ``scale``: as a ``(3,)`` vector and as the ``(3 BLOCK, BLOCK)`` block-diagonal matrix."""
    weights = torch.tensor([w * scale for w in GRAY_WEIGHTS], dtype=torch.float64).to(dtype=dtype, device=device)
    return weights, torch.block_diag(*[weights.view(3, 1)] * BLOCK)


def interleaved_luma(x: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """Luma, with scikit-image's ``rgb2gray`` weights, of a channels-last RGB batch.

    Args:
        x: ``(B, 3, H, W)`` batch for which :func:`is_interleaved_rgb` holds; uint8 data is scaled
            to [0, 1] (the scale is folded into the weights).
        dtype: floating dtype of the result.
        out: optional contiguous ``(B, 1, H, W)`` tensor of ``dtype`` to write into.

    Returns:
        ``(B, 1, H, W)`` contiguous luma (``out`` when given).

    Raises:
        ValueError: ``x`` is not interleaved RGB.
    """
    if not is_interleaved_rgb(x):
        raise ValueError(f"expected a channels-last (B, 3, H, W) batch, got shape {tuple(x.shape)}.")
    b, _, h, w = x.shape
    if out is None:
        out = torch.empty((b, 1, h, w), dtype=dtype, device=x.device)
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    vector, blocks = _block_weights(scale, dtype, x.device)
    pixels = h * w
    blocked = pixels // BLOCK * BLOCK
    flat_out = out.view(b, pixels)
    # One float buffer reused for every image: a fresh allocation per image costs its page faults each time.
    samples = torch.empty(3 * pixels, dtype=dtype, device=x.device)
    for i in range(b):
        samples.copy_(x[i].permute(1, 2, 0).reshape(3 * pixels))
        torch.mm(samples[: 3 * blocked].view(-1, 3 * BLOCK), blocks, out=flat_out[i, :blocked].view(-1, BLOCK))
        if blocked < pixels:
            torch.mv(samples[3 * blocked :].view(-1, 3), vector, out=flat_out[i, blocked:])
    return out
