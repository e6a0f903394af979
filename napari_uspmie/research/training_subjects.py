"""Real MR scans shipped in installed packages that the training set uses besides the MNI template.

The template is one smooth average brain, one T1 contrast, an exactly black background. The held-out
subjects are real scans with a noise floor around the head and, for dipy's, a T2 contrast. A generator
that only saw the template learns that "clean" means a black background and template intensities, and
on a real clean scan it wipes the noise floor and stretches the contrast. These scans are training
data only; none of them is a held-out subject or a file derived from one (dipy's
``ascm_out_test.nii.gz``, a denoised ``aniso_vox``, is left out for that reason):

* dipy ``S0_10slices.nii.gz``: a b0 (T2-weighted) diffusion scan, 10 axial slices of 2 mm pixels;
* nibabel ``example4d.nii.gz``: an EPI (T2*-weighted) functional run, first volume, 24 axial slices
  of 2 mm pixels;

Other MR files in the packages are not used: nilearn's ``image_10426`` is a statistical map, not
anatomy; nibabel's DICOM test files are empty or synthetic; dipy's ``test_piesno.nii.gz`` has lost
its pixel size (an identity affine: at the 1 mm it claims, its brain would be 60 mm wide); pydicom's
``MR_small`` covers 20 mm (64 pixels of 0.31 mm); nibabel's ``functional.nii`` (17 x 21 pixels of
4 mm) is too coarse and comes with ``anatomical.nii``, a held-out subject.
Only the acquired (axial) slices are used: their slice spacing (2 mm to 53 mm) is far coarser than
their pixels, so reformatted slices would be smeared. Each slice is resampled in plane to 1 mm.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_uspmie.io.packaged_data import package_file

__all__ = [
    "TRAINING_SUBJECTS",
    "SUBJECT_BLOCK",
    "SUBJECT_DRAWS_FACTOR",
    "MIN_FOREGROUND",
    "unit_scale",
    "load_axial_slices",
    "split_subject_slices",
    "installed_subjects",
]

#: name -> (package, file inside the package) of each real training scan
TRAINING_SUBJECTS = {
    "dipy_s0": ("dipy", "data/files/S0_10slices.nii.gz"),
    "nibabel_epi": ("nibabel", "tests/data/example4d.nii.gz"),
}
#: Neighbouring acquired slices kept together in one domain: a real scan's slices are 2 mm or more
#: apart, so blocks are shorter than the template's.
SUBJECT_BLOCK = 2
#: A real scan's slices get this many times the template slices' appearance draws, so that the few
#: real slices (34) make up about a third of each domain.
SUBJECT_DRAWS_FACTOR = 3
#: Share of a slice's pixels that must be above 10% of full scale for it to be used (the template's
#: slices, the real scans' and the held-out subjects' alike).
MIN_FOREGROUND = 0.15


def unit_scale(volume: np.ndarray) -> np.ndarray:
    """Scale to ``[0, 1]``: 0 stays 0, the 99.5th percentile of positive voxels becomes 1 (negatives clip)."""
    v = np.clip(np.asarray(volume, dtype=np.float64), 0, None)
    top = np.percentile(v[v > 0], 99.5) if np.any(v > 0) else 1.0
    return np.clip(v / top, 0, 1)


def load_axial_slices(path: Path, spacing: float = 1.0) -> list[np.ndarray]:
    """The axial slices of a scan (first volume of a 4D file), in plane at ``spacing`` mm, in ``[0, 1]``.

    The volume is reoriented to RAS and scaled as a whole by :func:`unit_scale`; each slice is
    resampled linearly and rotated to read like a radiology view. Slices with less than
    :data:`MIN_FOREGROUND` of their pixels above 0.1 are dropped.

    Returns:
        float32 slices, ordered from inferior to superior.
    """
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj)
    data = data.reshape(data.shape[:3] + (-1,))[..., 0].astype(np.float64)
    factors = np.asarray(img.header.get_zooms()[:2], dtype=np.float64) / spacing
    data = unit_scale(data)
    slices = []
    for k in range(data.shape[2]):
        plane = data[:, :, k]
        if not np.allclose(factors, 1.0):
            plane = ndimage.zoom(plane, factors, order=1, mode="nearest", grid_mode=True)
        plane = np.clip(np.rot90(plane), 0, 1)
        if np.mean(plane > 0.1) >= MIN_FOREGROUND:
            slices.append(np.ascontiguousarray(plane, dtype=np.float32))
    return slices


def split_subject_slices(count: int) -> dict[str, list[int]]:
    """Alternate blocks of :data:`SUBJECT_BLOCK` neighbouring slices between domains ``B`` and ``A``.

    The domains never share a slice, so they stay unpaired; no slice is held out (the held-out
    subjects are other scans).
    """
    split: dict[str, list[int]] = {"A": [], "B": []}
    for i in range(count):
        split["A" if (i // SUBJECT_BLOCK) % 2 else "B"].append(i)
    return split


def installed_subjects(wanted: set[str] | None = None) -> dict[str, Path]:
    """Paths of the training scans that are installed (all of them, or those named in ``wanted``)."""
    found = {}
    for name, (package, relative) in TRAINING_SUBJECTS.items():
        path = package_file(package, relative)
        if path is not None and (wanted is None or name in wanted):
            found[name] = path
    return found
