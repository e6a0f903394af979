"""The evaluation's cases on held-out data, and its out-of-scope inputs.

Every held-out item of :mod:`napari_uspmie.research.mri_dataset` (held-out MNI slices, other
subjects' slices, axial slices of held-out volumes) is presented three ways:

* **a, our degradation**: the degraded copy the dataset wrote (the acquisition model training saw);
* **b, unseen degradation**: the clean slice degraded by
  :mod:`napari_uspmie.research.unseen_degradation`, a k-space family training never used;
* **c, clean input**: the clean slice itself; the truth is the input, and a model that does no
  harm leaves it nearly unchanged.

Case **d** is a list of inputs outside the shipped model's scope (a CT file, a colour photograph,
a 10 mm scan), which the product must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from napari_uspmie.research.mri_dataset import get_slice
from napari_uspmie.research.niqe import load_gray
from napari_uspmie.research.training_subjects import MIN_FOREGROUND
from napari_uspmie.research.unseen_degradation import unseen_degradation

__all__ = ["CASES", "VOLUME_GROUP", "heldout_items", "case_inputs", "out_of_scope_inputs"]

CASES = {"a": "a: our degradation", "b": "b: unseen degradation", "c": "c: clean input"}
#: how the group of a held-out volume's slices begins (the volume's name follows)
VOLUME_GROUP = "held-out volume"


def _unit_array(array: np.ndarray) -> np.ndarray:
    """8-bit data to ``[0, 1]`` by 255 (as in training); float data is taken as already in ``[0, 1]``."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float64) / np.iinfo(array.dtype).max
    return np.clip(array.astype(np.float64), 0, 1)


def heldout_items(dataset_dir: str | Path) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(group, name, degraded, clean)`` of every held-out slice and axial slice of a held-out volume."""
    dataset_dir = Path(dataset_dir)
    clean_dir = dataset_dir / "heldout" / "slices" / "clean"
    for path in sorted(clean_dir.glob("*.png")):
        group = "MNI152 held-out slices" if path.name.startswith("mni_") else "other-subject slices"
        yield group, path.stem, load_gray(dataset_dir / "heldout/slices/degraded" / path.name), load_gray(path)
    for path in sorted((dataset_dir / "heldout" / "volumes").glob("*_clean.nii.gz")):
        name = path.name[: -len("_clean.nii.gz")]
        clean = _unit_array(np.asanyarray(nib.load(str(path)).dataobj))
        degraded = _unit_array(np.asanyarray(nib.load(str(path.with_name(f"{name}_degraded.nii.gz"))).dataobj))
        for k in range(clean.shape[2]):
            c = get_slice(clean, "axial", k)
            if (c > 0.1).mean() >= MIN_FOREGROUND:
                yield f"{VOLUME_GROUP} {name}", f"{name}_z{k:03d}", get_slice(degraded, "axial", k), c


def case_inputs(
    dataset_dir: str | Path, seed: int = 0, every: int = 1
) -> Iterator[tuple[str, str, str, np.ndarray, np.ndarray]]:
    """``(case, group, name, input, clean)`` for cases a, b and c (see the module docstring).

    Args:
        dataset_dir: folder written by the dataset builder.
        seed: seed of the unseen degradation (each item gets its own stream).
        every: keep every ``every``-th held-out item only.
    """
    for k, (group, name, degraded, clean) in enumerate(heldout_items(dataset_dir)):
        if k % every:
            continue
        yield CASES["a"], group, name, degraded, clean
        unseen, _ = unseen_degradation(clean, np.random.default_rng([seed, 500, k]))
        yield CASES["b"], group, name, unseen, clean
        yield CASES["c"], group, name, clean, clean


def out_of_scope_inputs() -> list[dict[str, Any]]:
    """Case d: inputs the shipped MR model must refuse, as ``{"name", "channels", "modality", "spacing"}``.

    Read from packaged files where possible: pydicom's ``CT_small.dcm`` (its header says CT),
    scikit-image's astronaut photograph (RGB), and a brain MR declared at 10 mm pixels.
    """
    from pydicom.data import get_testdata_file
    from skimage import data

    from napari_uspmie.io.readers import read_image

    cases: list[dict[str, Any]] = []
    ct = get_testdata_file("CT_small.dcm")
    if ct is not None:
        _, meta = read_image(ct)
        spacing = tuple(float(s) for s in meta["spacing"][-2:])
        cases.append(
            {"name": "pydicom CT_small.dcm", "channels": 1, "modality": meta.get("modality"), "spacing": spacing}
        )
    photo = data.astronaut()
    cases.append(
        {"name": "scikit-image astronaut (RGB photo)", "channels": photo.shape[-1], "modality": None, "spacing": None}
    )
    cases.append({"name": "MR declared at 10 mm pixels", "channels": 1, "modality": "MR", "spacing": (10.0, 10.0)})
    return cases
