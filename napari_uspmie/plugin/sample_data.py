"""napari sample data: a brain MRI volume and a degraded copy of it, both offline.

The volume is the MNI152 2009a symmetric T1 template (197 x 233 x 189 voxels, 1 mm, uint8)
that ships inside the nilearn package; it is read through the plugin's own reader, so it
carries its NIfTI header and world placement. The degraded copy is one seeded draw of the
low-quality acquisition model of :mod:`napari_uspmie.research.acquisition` (bias field, blur, haze,
Rician noise), the kind of image LaMEGAN is meant to enhance. The template is the anatomy the
shipped model was trained on; the third sample is the demo's subject the model never saw
(dipy's T2-weighted ``aniso_vox.nii.gz``, resampled to the model's 1 mm pixels) and its
degraded copy, exactly as ``python -m napari_uspmie demo`` prepares them.
"""

from __future__ import annotations

import copy
import tempfile
from typing import Any

from napari_uspmie.io.packaged_data import mni152_path

__all__ = ["brain_mri", "brain_mri_degraded", "unseen_subject_degraded", "DEGRADATION_SEED"]

#: seed of the sample's degradation, so that every user sees the same degraded image
DEGRADATION_SEED = 0


def brain_mri() -> list[tuple[Any, dict, str]]:
    """The MNI152 T1 template as one image layer (NIfTI header in ``metadata``)."""
    from napari_uspmie.plugin.reader import layer_data_tuple

    data, kwargs, kind = layer_data_tuple(mni152_path())
    kwargs["name"] = "MNI152 T1"
    return [(data, kwargs, kind)]


def brain_mri_degraded(severity: float = 1.0) -> list[tuple[Any, dict, str]]:
    """The MNI152 T1 template and a degraded copy (same geometry, header and contrast limits).

    Args:
        severity: strength of the simulated low-quality acquisition (1 = the training data's).
    """
    from napari_uspmie.research.acquisition import degrade_volume

    (data, kwargs, kind) = brain_mri()[0]
    degraded = degrade_volume(data, seed=DEGRADATION_SEED, severity=severity)
    meta = copy.copy(kwargs["metadata"])
    meta["degradation"] = {
        "model": "napari_uspmie.research.acquisition",
        "seed": DEGRADATION_SEED,
        "severity": severity,
    }
    degraded_kwargs = dict(kwargs, name="MNI152 T1 degraded", metadata=meta)
    return [(data, kwargs, kind), (degraded, degraded_kwargs, kind)]


def unseen_subject_degraded() -> list[tuple[Any, dict, str]]:
    """The demo's held-out subject (clean, 1 mm) and its degraded copy, read like any NIfTI file.

    Raises:
        ValueError: dipy, which ships the volume, is not installed.
    """
    from napari_uspmie.plugin.reader import layer_data_tuple
    from napari_uspmie.research.demo import DEFAULT_SUBJECT, prepare_demo_volume

    with tempfile.TemporaryDirectory() as tmp:
        degraded_path, clean_path = prepare_demo_volume(tmp, DEFAULT_SUBJECT)
        layers = [layer_data_tuple(clean_path), layer_data_tuple(degraded_path)]
    for (_, kwargs, _), name in zip(layers, ("unseen subject", "unseen subject degraded"), strict=True):
        kwargs["name"] = name
    return layers
