"""The Laplacian band of the official LaMEGAN training code: kornia's bilinear pyramid.

The official code (``LaMEGAN/models/lamegan_model.py``) builds the perceptual loss's band with
kornia's ``pyrdown``/``pyrup`` on ``torchvision.transforms.Grayscale`` images. This module
computes the same in plain torch, so the option needs no extra package:

* grey: ITU-R BT.601 weights ``(0.2989, 0.587, 0.114)`` (torchvision's), not the metric's BT.709;
* ``pyrdown``: the ``outer([1, 4, 6, 4, 1]) / 256`` blur with reflect borders, then bilinear
  resampling to half size (``align_corners=False``), which averages 2x2 blocks;
* ``pyrup``: bilinear resampling to twice the size (``align_corners=False``), then the same blur.

The metric's pyramid (:mod:`napari_uspmie.metric.pyramid`, OpenCV's) decimates instead of
averaging and upsamples by zero insertion, so the two bands differ in detail (their shapes agree
and they are strongly correlated). Sides must be divisible by ``2 ** (level + 1)`` (the official
code asks ``2 ** max_level`` because it builds every band; its crops are 256 pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BT601_GRAY_WEIGHTS", "bt601_gray", "bilinear_pyr_down", "bilinear_pyr_up", "bilinear_laplacian_residual"]

#: torchvision's ``rgb_to_grayscale`` weights, used by the official training code.
BT601_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_TAPS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def bt601_gray(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` grey of ``(B, 1 or 3, H, W)`` images (one channel is returned as it is)."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}.")
    weights = torch.tensor(BT601_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blur(x: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    taps = _TAPS.to(device=x.device, dtype=x.dtype)
    kernel = torch.outer(taps, taps).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def bilinear_pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur, then bilinear resampling to half size: kornia's ``pyrdown`` defaults."""
    h, w = x.shape[-2:]
    return F.interpolate(_blur(x), size=(h // 2, w // 2), mode="bilinear", align_corners=False)


def bilinear_pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling to twice the size, then blur: kornia's ``pyrup`` defaults."""
    h, w = x.shape[-2:]
    return _blur(F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False))


def bilinear_laplacian_residual(x: torch.Tensor, level: int = 3, max_level: int = 5) -> torch.Tensor:
    """The official training code's band ``G_level - pyrup(G_level+1)`` of the grey image.

    Args:
        x: ``(B, 1 or 3, H, W)`` images; H and W divisible by ``2 ** (level + 1)``.
        level: band, ``0 <= level < max_level``.
        max_level: pyramid depth (the official code: 5).

    Returns:
        ``(B, 1, H / 2**level, W / 2**level)``.

    Raises:
        ValueError: ``level`` out of range, or sides not divisible by ``2 ** (level + 1)``.
    """
    if not 0 <= level < max_level:
        raise ValueError(f"level must be in [0, {max_level - 1}], got {level}.")
    step = 2 ** (level + 1)
    if any(s % step for s in x.shape[-2:]):
        raise ValueError(
            f"the kornia loss pyramid at level {level} needs sides divisible by {step}, got {tuple(x.shape[-2:])}; "
            f"use a patch_size that is a multiple of {step}, or loss_pyramid 'metric'."
        )
    gauss = bt601_gray(x)
    for _ in range(level):
        gauss = bilinear_pyr_down(gauss)
    return gauss - bilinear_pyr_up(bilinear_pyr_down(gauss))
