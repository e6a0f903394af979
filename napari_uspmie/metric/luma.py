"""Luma weights shared by LaSSIM, colour adaptation and display (no torch import here)."""

from __future__ import annotations

__all__ = ["GRAY_WEIGHTS"]

#: RGB -> Y weights of scikit-image's ``rgb2gray`` (ITU-R BT.709), as the reference LaSSIM uses.
GRAY_WEIGHTS: tuple[float, float, float] = (0.2125, 0.7154, 0.0721)
