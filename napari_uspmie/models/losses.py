"""Losses of LaMEGAN and MIINet: least-squares GAN, the Laplacian perceptual loss, VGG19 features of images.

The cycle and identity terms are plain L1 (``torch.nn.L1Loss``). The perceptual term
compares the grayscale Laplacian residual of an image with that of its translation
(:func:`napari_uspmie.metric.pyramid.laplacian_residual`, the same OpenCV-exact pyramid as the
LaSSIM metric), in one of three ways:

* ``"vgg19"`` (the paper): L1 between VGG19 ``features[:10]`` activations of the two
  residuals, repeated to 3 channels and normalised as the official code does,
  ``(r - (mean - 1)) / (2 * std)`` with the ImageNet mean and std;
* ``"lassim"`` (this project's extension): ``1 - SSIM`` of the two residuals with the
  metric's own conventions, i.e. ``1 - LaSSIM``; needs no pretrained weights;
* ``"none"``: no perceptual term (the CycleGAN baseline).

The band comes from the metric's pyramid by default (``pyramid="metric"``), as the paper defines
the loss on the same residual as the metric; ``pyramid="kornia"`` uses the official training code's
bilinear pyramid instead (:mod:`napari_uspmie.models.bilinear_pyramid`).

MIINet's perceptual term (:class:`ImagePerceptualLoss`) compares the same VGG19 features of the
images themselves, not of a band.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.errors import SettingError, log_error
from napari_uspmie.metric.lassim import min_size_for_level, ssim_map, to_gray
from napari_uspmie.metric.pyramid import laplacian_residual
from napari_uspmie.models.bilinear_pyramid import bilinear_laplacian_residual

__all__ = [
    "PERCEPTUAL_KINDS",
    "LOSS_PYRAMIDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LSGANLoss",
    "discriminator_loss",
    "LaplacianPerceptualLoss",
    "VGGFeatures",
    "ImagePerceptualLoss",
]

logger = logging.getLogger(__name__)

PERCEPTUAL_KINDS = ("vgg19", "lassim", "none")
LOSS_PYRAMIDS = ("metric", "kornia")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LSGANLoss(nn.Module):
    """Least-squares GAN loss: mean squared error of discriminator outputs against 1 or 0."""

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """
        Args:
            prediction: discriminator output (any shape; PatchGAN gives a map of patch scores).
            target_is_real: compare with 1 (real) or 0 (fake).

        Returns:
            Scalar loss.
        """
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return F.mse_loss(prediction.float(), target.float())


def discriminator_loss(gan_loss: nn.Module, pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    """CycleGAN's discriminator objective ``0.5 * (L(D(real), 1) + L(D(fake), 0))``.

    The factor 0.5 slows the discriminator relative to the generator, as in the paper.
    """
    return 0.5 * (gan_loss(pred_real, True) + gan_loss(pred_fake, False))


class VGGFeatures(nn.Module):
    """Frozen VGG19 ``features[:10]`` of ``(B, 1 or 3, H, W)`` tensors in [-1, 1], normalised the official way.

    The official code feeds ``(x - (mean - 1)) / (2 * std)`` (ImageNet mean and std), the
    normalisation meant for [-1, 1] inputs; one channel is repeated to three.

    Args:
        vgg_weights: VGG19 weights file; ``None`` looks in the torch hub cache, then downloads
            (:mod:`napari_uspmie.models.vgg_weights`).
        features: a ready 3-channel feature extractor to use instead (tests, other backbones).
        download: allow downloading the weights.

    Raises:
        napari_uspmie.models.vgg_weights.VGGWeightsUnavailableError: no reachable weights.
    """

    def __init__(
        self, vgg_weights: str | os.PathLike | None = None, features: nn.Module | None = None, download: bool = True
    ) -> None:
        super().__init__()
        if features is None:
            # Imported here so that weight-free losses never touch the weights machinery.
            from napari_uspmie.models.vgg_weights import VGGWeightsUnavailableError, build_vgg19_features

            try:
                features = build_vgg19_features(vgg_weights, download=download)
            except VGGWeightsUnavailableError as err:
                # Logged here: the bundle CLI then ends on this one line, without a traceback.
                log_error(logger, err)
                raise
        features.requires_grad_(False)
        self.features = features.eval()
        self.register_buffer("shift", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) - 1.0, persistent=False)
        self.register_buffer("scale", 2.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        super().train(mode)
        self.features.eval()  # frozen: evaluation mode whatever the trainer does
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x.expand(-1, 3, -1, -1) - self.shift) / self.scale)


class LaplacianPerceptualLoss(nn.Module):
    """Perceptual distance between the Laplacian residuals of two images.

    Args:
        kind: ``"vgg19"`` (paper), ``"lassim"`` or ``"none"``; see the module docstring.
        level: pyramid level of the residual (paper: 3).
        max_level: pyramid depth (paper: 5).
        vgg_weights: VGG19 weights file for ``"vgg19"`` (see :class:`VGGFeatures`).
        features: a ready feature extractor to use instead of loading VGG19 (tests,
            benchmarks, custom backbones taking 3-channel input).
        download: allow downloading the VGG19 weights.
        pyramid: ``"metric"`` (the metric's OpenCV pyramid, default) or ``"kornia"`` (the official
            training code's bilinear pyramid).

    Raises:
        SettingError: (a ``ValueError``) unknown ``kind`` or ``pyramid``.
        ValueError: ``level`` out of range.
        napari_uspmie.models.vgg_weights.VGGWeightsUnavailableError: ``"vgg19"`` without reachable weights.
    """

    def __init__(
        self,
        kind: str = "vgg19",
        level: int = 3,
        max_level: int = 5,
        vgg_weights: str | os.PathLike | None = None,
        features: nn.Module | None = None,
        download: bool = True,
        pyramid: str = "metric",
    ) -> None:
        super().__init__()
        kind = str(kind).lower()
        if kind not in PERCEPTUAL_KINDS:
            raise SettingError(f"perceptual_loss must be one of {', '.join(PERCEPTUAL_KINDS)}, got {kind!r}.")
        if pyramid not in LOSS_PYRAMIDS:
            raise SettingError(f"loss_pyramid must be one of {', '.join(LOSS_PYRAMIDS)}, got {pyramid!r}.")
        if not 0 <= level < max_level:
            raise ValueError(f"level must be in [0, {max_level - 1}] (a band, not the coarsest level).")
        self.kind = kind
        self.level = level
        self.max_level = max_level
        self.pyramid = pyramid
        self.vgg = VGGFeatures(vgg_weights, features, download) if kind == "vgg19" else None

    @property
    def enabled(self) -> bool:
        """``False`` for ``"none"``: the trainer then skips the term entirely."""
        return self.kind != "none"

    def min_size(self) -> int:
        """Smallest patch side the loss accepts (the SSIM window must fit the ``"lassim"`` band)."""
        if self.kind == "lassim":
            return min_size_for_level(self.level)
        # The band must survive VGG's two 2x2 poolings (pyr_down itself needs only 3 samples).
        return 4 * 2**self.level

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale Laplacian residual ``(B, 1, H / 2**level, W / 2**level)`` of ``x``."""
        if self.pyramid == "kornia":
            return bilinear_laplacian_residual(x, self.level, self.max_level)
        return laplacian_residual(to_gray(x), self.level, self.max_level)

    def forward(self, reference: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        """Loss between a real image and its translation (both ``(B, C, H, W)`` in [-1, 1]).

        Returns:
            Scalar tensor; 0 when the residuals are identical (and always 0 for ``"none"``).
        """
        if not self.enabled:
            return translated.new_zeros(())
        if reference.shape != translated.shape:
            raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(translated.shape)}.")
        if min(reference.shape[2:]) < self.min_size():
            raise ValueError(
                f"images of spatial size {tuple(reference.shape[2:])} are too small for the {self.kind!r} "
                f"perceptual loss at pyramid level {self.level}: every side needs >= {self.min_size()}."
            )
        if self.kind == "lassim":
            return self._lassim_loss(reference, translated)
        feats = self.vgg(self.residual(torch.cat([reference, translated], dim=0)))
        ref_feat, out_feat = feats.chunk(2, dim=0)
        return F.l1_loss(out_feat, ref_feat.detach())

    def _lassim_loss(self, reference: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        # SSIM subtracts nearly equal moments: compute it in float32 even under fp16 autocast.
        with torch.autocast(device_type=translated.device.type, enabled=False):
            b = reference.shape[0]
            bands = self.residual(torch.cat([reference, translated], dim=0).float())
            ref_band, out_band = bands[:b].detach(), bands[b:]
            flat = torch.cat([ref_band.flatten(1), out_band.flatten(1)], dim=1)
            # The joint range only sets SSIM's stabilising constants; no gradient through it.
            data_range = (flat.amax(dim=1) - flat.amin(dim=1)).detach()
            score = ssim_map(out_band, ref_band, data_range).flatten(1).mean(dim=1)
        return (1.0 - score).mean()


class ImagePerceptualLoss(nn.Module):
    """MIINet's perceptual term: L1 between VGG19 ``features[:10]`` of an image and of its translation.

    As the official code (``LaMEGAN/models/miinet_model.py``, feature block 2): the raw images,
    not a band, normalised as in :class:`VGGFeatures`; the reference's features carry no gradient.

    Args:
        vgg_weights, features, download: as for :class:`VGGFeatures`.
    """

    enabled = True

    def __init__(
        self, vgg_weights: str | os.PathLike | None = None, features: nn.Module | None = None, download: bool = True
    ) -> None:
        super().__init__()
        self.vgg = VGGFeatures(vgg_weights, features, download)

    def forward(self, reference: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        """Scalar loss between ``(B, C, H, W)`` images in [-1, 1]; 0 for identical images."""
        if reference.shape != translated.shape:
            raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(translated.shape)}.")
        with torch.no_grad():
            ref_feat = self.vgg(reference)
        return F.l1_loss(self.vgg(translated), ref_feat)
