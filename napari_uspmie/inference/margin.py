"""The margin the product puts around each slice in the network, cropped off after.

Generators trained on random crops mark the edges of what they are given (dark or bright lines,
blotches in the corners); with a margin those edges fall outside the image. What fills the
margin matters too, because every instance norm of the generator takes its statistics over the
whole input:

* a slice with background at its border (a whole head in air) is **reflected**, which continues
  the background as it is (noise, haze and all);
* a slice whose field of view cuts through the anatomy (most of its border is tissue) is
  **framed** by its own minimum instead. Reflected, it would become a field of tissue with no
  background at all, unlike every slice the model was trained on, and the shipped model then
  draws dark blobs over tissue and grows the ventricles; framed, it sees what it learned, anatomy
  surrounded by the darkest signal of the image.

Conventions: ``(N, C, H, W)`` tensors, each image decided on its own; "tissue" is a border pixel
(channel mean) above ``TISSUE_LEVEL`` of the way from the image's 1st to its 99th percentile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_MARGIN", "TISSUE_LEVEL", "FRAMED_BORDER_SHARE", "border_tissue_share", "add_margin"]

#: pixels of context the product puts around each slice in the network (see :func:`add_margin`)
DEFAULT_MARGIN = 16
#: a border pixel is tissue above this fraction of the way from the 1st to the 99th percentile
TISSUE_LEVEL = 0.2
#: images whose border is tissue for more than this share are framed, not reflected
FRAMED_BORDER_SHARE = 0.5
#: about this many pixels per image (an even grid of them) go into its percentiles
_PERCENTILE_SAMPLE = 4096
_BORDER = 2


def border_tissue_share(x: torch.Tensor) -> torch.Tensor:
    """Share of each image's outer 2-pixel ring that is tissue (module docstring).

    Args:
        x: ``(N, C, H, W)`` images, any range.

    Returns:
        ``(N,)`` float tensor in ``[0, 1]``; 0 for flat images (no tissue can be told apart).
    """
    h, w = x.shape[-2:]
    step = max(1, math.isqrt(h * w // _PERCENTILE_SAMPLE))
    sample = x[..., ::step, ::step].float().mean(dim=1).flatten(1)
    lo, hi = torch.quantile(sample, torch.tensor([0.01, 0.99], device=x.device), dim=1)
    b = min(_BORDER, h, w)
    strips = [x[..., :b, :], x[..., -b:, :], x[..., :, :b], x[..., :, -b:]]
    border = torch.cat([t.flatten(2) for t in strips], dim=2).float().mean(dim=1)
    tissue = (border > (lo + TISSUE_LEVEL * (hi - lo))[:, None]).float().mean(dim=1)
    return torch.where(hi > lo, tissue, torch.zeros_like(tissue))


def add_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    """Put ``margin`` pixels of context around ``(N, C, H, W)`` images: reflected, or framed by the
    image's per-channel minimum where its field of view cuts through the anatomy (module docstring).

    Images too small to reflect are replicated. ``margin`` 0 returns ``x`` itself.
    """
    if margin <= 0:
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if margin < h and margin < w else "replicate"
    padded = F.pad(x, (margin, margin, margin, margin), mode=mode)
    framed = border_tissue_share(x) > FRAMED_BORDER_SHARE
    if bool(framed.any()):
        lowest = x.amin(dim=(2, 3), keepdim=True)
        chosen = framed[:, None, None, None]
        m = margin
        for strip in (padded[..., :m, :], padded[..., -m:, :], padded[..., :, :m], padded[..., :, -m:]):
            strip.copy_(torch.where(chosen, lowest, strip))
    return padded
