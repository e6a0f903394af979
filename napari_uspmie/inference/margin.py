"""The margin the product puts around each slice in the network, cropped off after.

Generators trained on random crops mark the edges of what they are given (dark or bright lines,
blotches in the corners); with a margin those edges fall outside the image. What fills the
margin matters too, because every instance norm of the generator takes its statistics over the
whole input:

* an image with background at its border (a whole head in air) is **reflected**, which continues
  the background as it is (noise, haze and all);
* an image whose field of view cuts through the anatomy (most of its border is tissue) is
  **framed** by its minimum instead. Reflected, it would become a field of tissue with no
  background at all, unlike every slice the model was trained on, and the shipped model then
  draws dark blobs over tissue and grows the ventricles; framed, it sees what it learned, anatomy
  surrounded by the darkest signal of the image.

Conventions: ``(N, C, H, W)`` slices in consecutive groups of ``group`` (the slices of one
volume; 1 for independent images). Each group is decided once, so that neighbouring slices of a
volume never get different context, and framed by its per-channel minimum. "Tissue" is a border
pixel (mean over channels) above ``TISSUE_LEVEL`` of the way from the group's 1st to its 99th
percentile (taken on an even sample of each slice): the empty end slices of a head in air
count as background, as their noise sits far below the volume's tissue.
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
#: groups whose border is tissue for more than this share are framed, not reflected
FRAMED_BORDER_SHARE = 0.5
#: about this many pixels per slice (an even grid of them) go into the percentiles
_PERCENTILE_SAMPLE = 4096
#: at most this many sampled pixels per group (slices are skipped evenly beyond)
_GROUP_SAMPLE = 2**18
_BORDER = 2


def _groups(x: torch.Tensor, group: int) -> int:
    if group < 1 or x.shape[0] % group:
        raise ValueError(f"{x.shape[0]} slices do not split into groups of {group}.")
    return x.shape[0] // group


def border_tissue_share(x: torch.Tensor, group: int = 1) -> torch.Tensor:
    """Share of the outer 2-pixel rings of each group of slices that is tissue (module docstring).

    Args:
        x: ``(N, C, H, W)`` slices, any range.
        group: consecutive slices decided together (``N`` must be a multiple).

    Returns:
        ``(N // group,)`` float tensor in ``[0, 1]``; 0 for flat groups (no tissue can be told apart).

    Raises:
        ValueError: ``N`` is not a multiple of ``group``.
    """
    n = _groups(x, group)
    h, w = x.shape[-2:]
    step = max(1, math.isqrt(h * w // _PERCENTILE_SAMPLE))
    sample = x[..., ::step, ::step].float().mean(dim=1).reshape(n, group, -1)
    every = max(1, math.ceil(group * sample.shape[-1] / _GROUP_SAMPLE))
    sample = sample[:, ::every].reshape(n, -1)
    lo, hi = torch.quantile(sample, torch.tensor([0.01, 0.99], device=x.device), dim=1)
    b = min(_BORDER, h, w)
    strips = [x[..., :b, :], x[..., -b:, :], x[..., :, :b], x[..., :, -b:]]
    border = torch.cat([t.flatten(2) for t in strips], dim=2).float().mean(dim=1).reshape(n, -1)
    tissue = (border > (lo + TISSUE_LEVEL * (hi - lo))[:, None]).float().mean(dim=1)
    return torch.where(hi > lo, tissue, torch.zeros_like(tissue))


def add_margin(x: torch.Tensor, margin: int, group: int = 1) -> torch.Tensor:
    """Put ``margin`` pixels of context around ``(N, C, H, W)`` slices: reflected, or framed by the
    group's per-channel minimum where its field of view cuts through the anatomy (module docstring).

    Args:
        x: the slices; not modified.
        margin: pixels on every side; 0 returns ``x`` itself.
        group: consecutive slices of one volume, decided and framed together.

    Images too small to reflect are replicated.
    """
    if margin <= 0:
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if margin < h and margin < w else "replicate"
    padded = F.pad(x, (margin, margin, margin, margin), mode=mode)
    if x.shape[0] == 0:
        return padded
    framed = border_tissue_share(x, group) > FRAMED_BORDER_SHARE
    if bool(framed.any()):
        n, c = _groups(x, group), x.shape[1]
        lowest = x.amin(dim=(2, 3)).reshape(n, group, c).amin(dim=1)
        lowest = lowest.repeat_interleave(group, dim=0)[:, :, None, None]
        chosen = framed.repeat_interleave(group)[:, None, None, None]
        m = margin
        for strip in (padded[..., :m, :], padded[..., -m:, :], padded[..., :, :m], padded[..., :, -m:]):
            strip.copy_(torch.where(chosen, lowest, strip))
    return padded
