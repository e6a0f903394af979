"""napari-uspmie: unsupervised, structure-preserving medical image enhancement.

LaSSIM (a no-reference measure of structure preservation) and LaMEGAN (an unpaired
GAN enhancer), shipped as a MONAI bundle and a napari plugin.

Layers, bottom to top: ``metric`` (LaSSIM, torch only), ``models`` (networks, losses),
``io`` (files with their geometry, no torch), ``inference`` (the enhancer) and ``training``,
``bundle`` (what the MONAI configs reference), then the faces: ``plugin`` (napari), ``cli``;
``research`` holds the paper's experiments and is never imported by product code.

Importing this package imports neither torch, MONAI, napari nor Qt: each public name below
loads its module on first use, so that opening a NIfTI in napari stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "lassim": "napari_uspmie.metric.lassim",
    "lassim_map": "napari_uspmie.metric.lassim",
    "LaSSIMMetric": "napari_uspmie.metric.monai_metric",
    "LaSSIMHandler": "napari_uspmie.metric.handler",
    "Enhancer": "napari_uspmie.inference.enhancer",
    "load_enhancer": "napari_uspmie.inference.enhancer",
    "read_image": "napari_uspmie.io.readers",
    "write_like": "napari_uspmie.io.writers",
    "bundle_path": "napari_uspmie.io.packaged_data",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_uspmie' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
