"""Real training scans: loaded at 1 mm in plane, split unpaired between the domains, kept apart from
the held-out subjects."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_uspmie.research.appearance import DRAWS
from napari_uspmie.research.mri_dataset import HELD_OUT_2D, HELD_OUT_VOLUMES, build_mri_dataset
from napari_uspmie.research.training_subjects import (
    SUBJECT_BLOCK,
    SUBJECT_DRAWS_FACTOR,
    TRAINING_SUBJECTS,
    installed_subjects,
    load_axial_slices,
    split_subject_slices,
    unit_scale,
)


def _scan(tmp_path, affine, shape=(40, 30, 6, 2)):
    """A 4D scan whose first volume holds a bright square in the x < 10, y < 8 corner of every slice
    (distinct from the second volume) and a head-sized block of tissue."""
    data = np.zeros(shape, dtype=np.int16)
    data[5:35, 5:25, :, :] = 300
    data[:10, :8, :, 0] = 1000
    data[..., 1] = 50
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_axial_slices_are_resampled_in_plane_reoriented_and_from_the_first_volume(tmp_path):
    ras = np.diag([2.0, 2.0, 5.0, 1.0])
    slices = load_axial_slices(_scan(tmp_path, ras))
    assert len(slices) == 6  # slices are not resampled across their 5 mm spacing
    assert slices[0].shape == (60, 80) and slices[0].dtype == np.float32  # 2 mm pixels -> 1 mm, rotated
    # rot90 puts x to the columns and anterior (+y) at the top: the corner at low x, low y is bottom left
    assert slices[0][-10:, :10].mean() > 0.99 and slices[0][:8, -8:].max() == 0
    lps = np.diag([-2.0, -2.0, 5.0, 1.0])  # the same voxels stored flipped: reoriented to RAS first
    flipped = load_axial_slices(_scan(tmp_path, lps))
    np.testing.assert_allclose(flipped[0], np.flip(slices[0], axis=(0, 1)), atol=1e-6)


def test_empty_slices_are_dropped_and_scaling_keeps_zero(tmp_path):
    data = np.zeros((32, 32, 4), dtype=np.float32)
    data[4:28, 4:28, 1:3] = np.linspace(1, 100, 24 * 24 * 2).reshape(24, 24, 2)
    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    assert len(load_axial_slices(path)) == 2
    unit = unit_scale(np.array([-5.0, 0.0, 50.0, 100.0]))
    assert unit[0] == 0 and unit[1] == 0 and unit[-1] == 1 and 0.4 < unit[2] < 0.6


def test_split_alternates_blocks_between_domains():
    split = split_subject_slices(11)
    assert sorted(split["A"] + split["B"]) == list(range(11)) and not set(split["A"]) & set(split["B"])
    assert split["B"][:SUBJECT_BLOCK] == list(range(SUBJECT_BLOCK))
    assert split["A"][0] == SUBJECT_BLOCK


def test_training_scans_are_not_held_out_subjects():
    held = {rel for _, rel in [*HELD_OUT_VOLUMES.values(), *HELD_OUT_2D.values()]}
    assert not held & {rel for _, rel in TRAINING_SUBJECTS.values()}
    assert set(installed_subjects()) == set(TRAINING_SUBJECTS)  # the dev install has dipy and nibabel


def test_dataset_uses_the_real_scans_in_both_domains(tmp_path):
    manifest = build_mri_dataset(
        tmp_path / "d", orientations=("axial",), volumes=(), fit_niqe=False, subjects=("dipy_s0",)
    )
    split = manifest["split"]["dipy_s0"]
    a = sorted(p.name for p in (tmp_path / "d/A").glob("dipy_s0_*.png"))
    b = sorted(p.name for p in (tmp_path / "d/B").glob("dipy_s0_*.png"))
    draws = DRAWS * SUBJECT_DRAWS_FACTOR
    assert len(a) == draws * len(split["A"]) and len(b) == draws * len(split["B"]) and split["A"]
    assert not {n[:11] for n in a} & {n[:11] for n in b}  # unpaired: no slice index in both domains
    assert "nibabel_epi" not in manifest["split"]
    saved = json.loads((tmp_path / "d/manifest.json").read_text())
    assert len(saved["sources"]["dipy_s0"]["sha256"]) == 64
    clean = np.asarray(Image.open(tmp_path / "d/B" / b[0]), dtype=np.float64)
    assert clean.shape == (224, 224)
    # a real scan keeps its noise floor: the background around the head is not black
    assert 0 < np.median(clean[:20, 20:-20]) < 40 and clean.max() > 100


@pytest.mark.parametrize("name", sorted(TRAINING_SUBJECTS))
def test_each_shipped_scan_gives_usable_slices(name):
    path = installed_subjects({name})[name]
    slices = load_axial_slices(path)
    assert len(slices) >= 8
    for plane in slices:
        assert min(plane.shape) >= 180 and 0 <= plane.min() and plane.max() <= 1
