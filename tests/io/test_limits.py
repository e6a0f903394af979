"""Readers refuse, before allocating or blocking, what they cannot safely read."""

from __future__ import annotations

import os
import threading

import nibabel as nib
import numpy as np
import pytest

from napari_uspmie.errors import ImageReadError
from napari_uspmie.io.discovery import image_files
from napari_uspmie.io.limits import BUDGET_VARIABLE
from napari_uspmie.io.readers import read_image


def _header_only_nifti(path, shape, dtype=np.int16):
    """A valid NIfTI header declaring ``shape`` followed by almost no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), 1)
    path.write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 64)


@pytest.mark.parametrize("shape", [(1200, 1200, 1200), (64, 64, 40)])
def test_header_larger_than_the_file_is_refused_before_allocation(tmp_path, shape):
    path = tmp_path / "claims.nii"
    _header_only_nifti(path, shape)
    with pytest.raises(ImageReadError, match=r"claims\.nii: truncated or corrupt: the header declares"):
        read_image(path)


def test_gzipped_header_larger_than_the_budget_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.float32), np.eye(4)), str(path))
    monkeypatch.setenv(BUDGET_VARIABLE, str(32**3 * 4 - 1))
    with pytest.raises(ImageReadError, match=r"big\.nii\.gz: the header declares 32 x 32 x 32 float32 voxels.*budget"):
        read_image(path)
    monkeypatch.setenv(BUDGET_VARIABLE, str(32**3 * 4))
    assert read_image(path)[0].shape == (32, 32, 32)


def test_bad_budget_setting_is_named(tmp_path, monkeypatch):
    path = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(path))
    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    with pytest.raises(ImageReadError, match=BUDGET_VARIABLE):
        read_image(path)


def test_fifo_is_refused_at_once_and_skipped_by_discovery(tmp_path):
    fifo = tmp_path / "pipe.nii"
    os.mkfifo(fifo)
    (tmp_path / "real.png").write_bytes(b"x")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_refusal(fifo)), daemon=True)
    worker.start()
    worker.join(10)
    assert outcome and "a FIFO, not a regular file" in outcome[0]
    assert [p.name for p in image_files(tmp_path)] == ["real.png"]


def _refusal(path) -> str:
    try:
        read_image(path)
    except ImageReadError as e:
        return str(e)
    return "read"


def test_symlink_loop_and_unreadable_file_are_named(tmp_path):
    loop = tmp_path / "loop.nii"
    loop.symlink_to(loop)
    with pytest.raises(ImageReadError, match=r"loop\.nii: cannot be opened"):
        read_image(loop)
    if os.geteuid() == 0:
        return  # root reads everything: no permission error to provoke
    locked = tmp_path / "locked.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(locked))
    locked.chmod(0)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(locked)


def test_complex_nifti_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "phase.nii.gz"
    nib.save(nib.Nifti1Image((np.ones((4, 4, 4)) * (1 + 2j)).astype(np.complex64), np.eye(4)), str(path))
    with pytest.raises(ImageReadError, match=r"phase\.nii\.gz: complex voxels.*magnitude"):
        read_image(path)
