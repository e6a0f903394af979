"""The paper's LaSSIM reference pipeline (OpenCV pyramids + scikit-image SSIM), test-only."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity


def reference_gray(image: np.ndarray) -> np.ndarray:
    """RGB -> luma with skimage (uint8 scaled to [0, 1]); single channel as float64."""
    if image.ndim == 3 and image.shape[-1] == 3:
        return rgb2gray(image)
    return image.astype(np.float64)


def reference_residual(gray: np.ndarray, level: int = 3, max_level: int = 5) -> np.ndarray:
    gauss = [gray]
    for _ in range(max_level):
        gauss.append(cv2.pyrDown(gauss[-1]))
    bands = [gauss[-1]]
    for k in range(max_level, 0, -1):
        finer = gauss[k - 1]
        bands.append(finer - cv2.pyrUp(gauss[k], dstsize=(finer.shape[1], finer.shape[0])))
    return bands[max_level - level]


def reference_lassim(x: np.ndarray, y: np.ndarray, level: int = 3, max_level: int = 5, full: bool = False):
    lx = reference_residual(reference_gray(x), level, max_level)
    ly = reference_residual(reference_gray(y), level, max_level)
    data_range = max(lx.max(), ly.max()) - min(lx.min(), ly.min())
    return structural_similarity(lx, ly, data_range=data_range, full=full)
