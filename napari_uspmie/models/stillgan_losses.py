"""StillGAN's extra generator terms: illumination regularisation and the SSIM structure term.

StillGAN (Ma et al., IEEE TMI 2021) adds to CycleGAN two terms, following the options and
network definitions of the official USPMIE code (``LaMEGAN/models/stillgan_model.py`` and
``LaMEGAN/models/networks.py``, ``LuminanceLoss`` and ``StructureLoss``):

* **illumination**: on the enhanced image, the mean absolute deviation of local means (average
  pooled over square windows, 32 and 64 pixels) from the image mean, upsampled bicubically back to
  the region: zero for evenly lit images;
* **structure**: ``1 - mean(s)`` with ``s = (sigma_xy + C3) / (sigma_x sigma_y + C3)``, the
  structure component of SSIM (Gaussian window 9, sigma 1.5, zero padding, ``C3 = (0.03)^2 / 2``):
  zero for identical images, whatever their brightness and contrast.

Both work on the central ``roi_size`` square (256) mapped from [-1, 1] to [0, 1]. The structure term
adds the same Gaussian noise (sd 0.01) to both images and clips to [0, 1], as the official code
does: it keeps the standard deviations away from 0, where the square root has no gradient.
Images smaller than ``roi_size`` use the largest square that fits (a multiple of the largest
illumination window), so the terms also train on the compact configuration's 128-pixel patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IlluminationLoss", "StructureLoss", "central_square"]


def central_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """The central ``side x side`` region of ``(B, C, H, W)`` images.

    Raises:
        ValueError: an image side shorter than ``side``.
    """
    h, w = x.shape[-2:]
    if min(h, w) < side:
        raise ValueError(f"images of size {(h, w)} are smaller than the {side}-pixel region the loss needs.")
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


class IlluminationLoss(nn.Module):
    """StillGAN's illumination regularisation of an enhanced image (0 for even lighting).

    Args:
        windows: side lengths of the averaging windows; the loss is the mean over them
            (official: 32 and 64, applied as ``(L32 + L64) / 2``).
        roi_size: side of the central region evaluated (official: 256).

    Raises:
        ValueError: windows that are not positive, or ``roi_size`` not a multiple of each window.
    """

    def __init__(self, windows: Sequence[int] = (32, 64), roi_size: int = 256) -> None:
        super().__init__()
        self.windows = tuple(int(w) for w in windows)
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"illumination windows must be positive, got {windows}.")
        if any(roi_size % w for w in self.windows):
            raise ValueError(f"roi_size {roi_size} must be a multiple of every window {self.windows}.")
        self.roi_size = int(roi_size)

    def region_side(self, height: int, width: int) -> int:
        """Side of the region used for an image: ``roi_size``, or the largest multiple of the windows that fits."""
        step = max(self.windows)
        side = min(self.roi_size, (min(height, width) // step) * step)
        if side < step or any(side % w for w in self.windows):
            raise ValueError(
                f"images of size {(height, width)} are too small for illumination windows {self.windows}: "
                f"every side needs >= {step} pixels (and a multiple of each window)."
            )
        return side

    def forward(self, enhanced: torch.Tensor) -> torch.Tensor:
        """
        Args:
            enhanced: ``(B, C, H, W)`` in [-1, 1].

        Returns:
            Scalar loss.
        """
        side = self.region_side(*enhanced.shape[-2:])
        region = (central_square(enhanced, side).float() + 1.0) / 2.0
        global_mean = region.mean(dim=(2, 3), keepdim=True)
        terms = []
        for window in self.windows:
            deviation = F.avg_pool2d(region, window, stride=window) - global_mean
            spread = F.interpolate(deviation, size=(side, side), mode="bicubic", align_corners=False)
            terms.append(spread.abs().mean())
        return torch.stack(terms).mean()


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalised ``(size, size)`` Gaussian window centred on the middle sample."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    line = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    line = line / line.sum()
    return torch.outer(line, line).float()


class StructureLoss(nn.Module):
    """StillGAN's structure term ``1 - mean((sigma_xy + C3) / (sigma_x sigma_y + C3))`` (0 for identical images).

    Args:
        window_size: Gaussian window side (official: 9).
        sigma: Gaussian window width (1.5).
        roi_size: side of the central region compared (official: 256; smaller images use their
            shorter side).
        noise_std: sd of the noise added to both images before comparing (official: 0.01); 0 turns it off.
        k2: SSIM's contrast constant; ``C3 = (k2 * 1)^2 / 2`` for images in [0, 1].
    """

    def __init__(
        self, window_size: int = 9, sigma: float = 1.5, roi_size: int = 256, noise_std: float = 0.01, k2: float = 0.03
    ) -> None:
        super().__init__()
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"window_size must be odd and positive, got {window_size}.")
        self.window_size = int(window_size)
        self.roi_size = int(roi_size)
        self.noise_std = float(noise_std)
        self.c3 = (k2**2) / 2.0
        self.register_buffer("window", gaussian_window(window_size, sigma)[None, None], persistent=False)

    def _local_mean(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.window.to(x.dtype).expand(channels, 1, -1, -1)
        return F.conv2d(x, kernel, padding=self.window_size // 2, groups=channels)

    def forward(self, reference: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        """
        Args:
            reference: the generator's input ``(B, C, H, W)`` in [-1, 1] (no gradient needed).
            translated: the generator's output, same shape.

        Returns:
            Scalar loss.
        """
        if reference.shape != translated.shape:
            raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(translated.shape)}.")
        side = min(self.roi_size, *reference.shape[-2:])
        x = (central_square(reference, side).float() + 1.0) / 2.0
        y = (central_square(translated, side).float() + 1.0) / 2.0
        if self.noise_std > 0:
            noise = torch.randn_like(x) * self.noise_std  # the same draw for both images
            x, y = (x + noise).clamp(0.0, 1.0), (y + noise).clamp(0.0, 1.0)
        mu_x, mu_y = self._local_mean(x), self._local_mean(y)
        # Rounding leaves tiny or negative variances in flat areas: clamped so the square root and its
        # gradient stay finite (1e-12 is far below C3).
        var_x = (self._local_mean(x * x) - mu_x * mu_x).clamp_min(1e-12)
        var_y = (self._local_mean(y * y) - mu_y * mu_y).clamp_min(1e-12)
        cov = self._local_mean(x * y) - mu_x * mu_y
        structure = (cov + self.c3) / (var_x.sqrt() * var_y.sqrt() + self.c3)
        return 1.0 - structure.mean()
