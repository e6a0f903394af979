"""napari-uspmie: unsupervised, structure-preserving medical image enhancement.

LaSSIM (a no-reference measure of structure preservation) and LaMEGAN (an unpaired
GAN enhancer), shipped as a MONAI bundle and a napari plugin. Importing this package
never imports napari or Qt; MONAI-dependent parts load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from napari_uspmie.bundle import bundle_path
from napari_uspmie.laplacian_ssim import lassim, lassim_map

__version__ = "0.1.0"

_LAZY = {
    "LaSSIMMetric": "napari_uspmie.metrics",
    "LaSSIMHandler": "napari_uspmie.metrics",
    "Enhancer": "napari_uspmie.enhance",
    "load_enhancer": "napari_uspmie.enhance",
}

__all__ = ["lassim", "lassim_map", "bundle_path", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_uspmie' has no attribute {name!r}")
