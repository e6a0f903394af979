"""The four unpaired methods the paper compares, as settings of one CycleGAN trainer.

Every method is CycleGAN (two generators, two PatchGAN discriminators, LSGAN, cycle L1 x 10)
plus its own generator terms. The defaults are the official code's
(``LaMEGAN/models/{lamegan,cyclegan,stillgan,miinet}_model.py``, options ``lambda_identity``,
``lambda_percep``, ``lambda_Luminance_B``, ``lambda_Structure``):

============  ===============  ==========================  ============  ==========  =========
method        lambda_identity  perceptual term             lambda_perc.  illumin.    structure
============  ===============  ==========================  ============  ==========  =========
lamegan       0                VGG19 of Laplacian bands    0.25          0           0
cyclegan      0                none                        0             0           0
stillgan      0.5              none                        0             0.1         0.5
miinet        0                VGG19 of the images         0.5           0           0
============  ===============  ==========================  ============  ==========  =========

``lambda_identity``, ``lambda_illumination`` and ``lambda_structure`` are relative to
``lambda_cycle``; every value is a bundle setting a command line can override.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from napari_uspmie.errors import SettingError

__all__ = ["METHODS", "method_settings", "perceptual_term", "illumination_term", "structure_term"]

METHODS: dict[str, dict[str, Any]] = {
    "lamegan": {"lambda_identity": 0.0, "perceptual_loss": "vgg19", "lambda_perceptual": 0.25},
    "cyclegan": {"lambda_identity": 0.0, "perceptual_loss": "none", "lambda_perceptual": 0.0},
    "stillgan": {"lambda_identity": 0.5, "perceptual_loss": "none", "lambda_perceptual": 0.0},
    "miinet": {"lambda_identity": 0.0, "perceptual_loss": "vgg19", "lambda_perceptual": 0.5},
}
_STILLGAN_WEIGHTS = {"lambda_illumination": 0.1, "lambda_structure": 0.5}


def method_settings(method: str) -> dict[str, Any]:
    """Default loss settings of ``method`` (see the module table).

    Raises:
        SettingError: an unknown method.
    """
    key = str(method).lower()
    if key not in METHODS:
        raise SettingError(f"method {method!r} is not one of {', '.join(METHODS)}; pass e.g. --method lamegan.")
    weights = _STILLGAN_WEIGHTS if key == "stillgan" else dict.fromkeys(_STILLGAN_WEIGHTS, 0.0)
    return {**METHODS[key], **weights}


def perceptual_term(
    method: str,
    perceptual_loss: str,
    level: int = 3,
    vgg_weights: str | os.PathLike | None = None,
    loss_pyramid: str = "metric",
) -> nn.Module:
    """The perceptual loss module of ``method``: MIINet's on images, the Laplacian one otherwise.

    Args:
        method: one of :data:`METHODS`.
        perceptual_loss: ``"vgg19"``, ``"lassim"`` or ``"none"`` (MIINet: ``"vgg19"`` or ``"none"``).
        level: band of the Laplacian loss.
        vgg_weights: VGG19 weights file (needed offline by ``"vgg19"``).
        loss_pyramid: ``"metric"`` or ``"kornia"`` (Laplacian loss only).

    Raises:
        SettingError: an unknown method, or a perceptual kind MIINet cannot use.
    """
    from napari_uspmie.models.losses import ImagePerceptualLoss, LaplacianPerceptualLoss

    key = str(method).lower()
    method_settings(key)
    if key == "miinet" and perceptual_loss != "none":
        if perceptual_loss != "vgg19":
            raise SettingError(
                f"method miinet compares VGG19 features; perceptual_loss {perceptual_loss!r} is not one."
            )
        return ImagePerceptualLoss(vgg_weights)
    return LaplacianPerceptualLoss(perceptual_loss, level=level, vgg_weights=vgg_weights, pyramid=loss_pyramid)


def illumination_term(lambda_illumination: float, roi_size: int = 256) -> nn.Module | None:
    """StillGAN's illumination loss when its weight is positive, else ``None``."""
    from napari_uspmie.models.stillgan_losses import IlluminationLoss

    return IlluminationLoss(roi_size=roi_size) if lambda_illumination > 0 else None


def structure_term(lambda_structure: float, roi_size: int = 256) -> nn.Module | None:
    """StillGAN's structure loss when its weight is positive, else ``None``."""
    from napari_uspmie.models.stillgan_losses import StructureLoss

    return StructureLoss(roi_size=roi_size) if lambda_structure > 0 else None
