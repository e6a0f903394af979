"""``python -m napari_uspmie enhance``: real NIfTI, DICOM series and PNG files in, enhanced files out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_uspmie.io.readers import read_image
from tests.io_factories import ct_volume, file_hashes, mni_slices, write_dicom_series, write_rgb_png


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_uspmie", "enhance", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    volume = np.moveaxis(mni_slices(6, 4), 0, -1).astype(np.uint8)  # (X, Y, Z) as NIfTI stores it
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    affine[:3, 3] = [-40.0, 20.0, 5.0]
    nib.save(nib.Nifti1Image(volume, affine), str(folder / "brain.nii.gz"))
    write_dicom_series(folder / "ct_series", ct_volume(5))
    write_rgb_png(folder / "fundus.png", size=(120, 96))
    return folder


def test_enhances_nifti_dicom_series_and_png_beside_or_into_a_folder(inputs, tmp_path):
    before = file_hashes(inputs)
    out = tmp_path / "out"
    done = run_cli(
        str(inputs / "brain.nii.gz"),
        str(inputs / "ct_series"),
        str(inputs / "fundus.png"),
        "-o",
        str(out),
        "--allow-out-of-scope",  # a CT series and a colour picture for an MR model
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert file_hashes(inputs) == before  # inputs untouched
    # each line reports the structure guard's verdict with its worst LaSSIM
    verdicts = re.findall(r"structure (kept|LOST)", done.stdout)
    assert len(verdicts) == 3, done.stdout
    assert done.stderr.count("out of scope, enhanced because allowed") == 2

    src, enh = nib.load(inputs / "brain.nii.gz"), nib.load(out / "brain_enhanced.nii.gz")
    np.testing.assert_allclose(enh.affine, src.affine)
    a, b = np.asarray(src.dataobj), np.asarray(enh.dataobj)
    assert b.shape == a.shape and b.dtype == a.dtype and not np.array_equal(a, b)

    series, meta = read_image(inputs / "ct_series")
    derived, derived_meta = read_image(out / "ct_series_enhanced")
    assert derived.shape == series.shape
    np.testing.assert_allclose(derived_meta["affine"], meta["affine"], atol=1e-4)
    assert derived.min() >= series.min() and derived.max() <= series.max()  # HU range kept
    assert not np.array_equal(derived, series)

    png, enhanced_png = Image.open(inputs / "fundus.png"), Image.open(out / "fundus_enhanced.png")
    assert enhanced_png.size == png.size and enhanced_png.mode == png.mode

    # without -o: beside the input; an existing output is kept unless --overwrite
    local = tmp_path / "local"
    local.mkdir()
    png_copy = local / "fundus.png"
    png_copy.write_bytes((inputs / "fundus.png").read_bytes())
    colour = "--allow-out-of-scope"  # a colour picture for a grey model
    assert run_cli(str(png_copy), "--bf16", colour, cwd=tmp_path).returncode == 0
    written = local / "fundus_enhanced.png"
    first = written.read_bytes()
    again = run_cli(str(png_copy), colour, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert written.read_bytes() == first
    assert run_cli(str(png_copy), "--overwrite", colour, cwd=tmp_path).returncode == 0


def test_bad_inputs_are_named_and_the_others_still_written(inputs, tmp_path):
    missing = run_cli(str(tmp_path / "nothere.nii.gz"), "-o", str(tmp_path / "made" / "deeper"), cwd=tmp_path)
    assert missing.returncode == 1 and "nothere.nii.gz: no such file or folder" in missing.stderr
    assert "nothing was written" in missing.stderr
    assert not (tmp_path / "made").exists()  # the output folders it created to test them are gone again
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    out = tmp_path / "out"
    done = run_cli(str(broken), str(inputs / "fundus.png"), "-o", str(out), "--allow-out-of-scope", cwd=tmp_path)
    assert done.returncode == 1
    assert "broken.nii.gz" in done.stderr and "1 of 2 inputs failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "fundus_enhanced.png").is_file() and not (out / "broken_enhanced.nii.gz").exists()
    unwritable = run_cli(str(inputs / "fundus.png"), "-o", str(inputs / "fundus.png" / "sub"), cwd=tmp_path)
    assert unwritable.returncode == 2 and "not writable" in unwritable.stderr


def test_an_input_is_never_the_output_of_another_input_even_with_overwrite(inputs, tmp_path):
    """``a.png`` beside ``a_enhanced.png`` (and a series folder beside ``<folder>_enhanced``): the
    default output name of one input is another input, which --overwrite must not replace."""
    slice_png = np.rint(mni_slices(1, 1)[0]).astype(np.uint8)
    Image.fromarray(slice_png).save(tmp_path / "a.png")
    Image.fromarray(255 - slice_png).save(tmp_path / "a_enhanced.png")
    write_dicom_series(tmp_path / "s", ct_volume(3))
    write_dicom_series(tmp_path / "s_enhanced", ct_volume(3)[::-1].copy())
    before = file_hashes(tmp_path)
    done = run_cli("a.png", "a_enhanced.png", "s", "s_enhanced", "--overwrite", "--allow-out-of-scope", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    for name, clash in (("a.png", "a_enhanced.png"), ("s", "s_enhanced")):
        assert re.search(rf"error: {name}: its output \S*{clash} would replace the input \S*{clash} ", done.stderr)
    assert "2 of 4 inputs failed" in done.stderr
    assert all(file_hashes(tmp_path)[k] == v for k, v in before.items())  # every input as it was
    assert (tmp_path / "a_enhanced_enhanced.png").is_file() and (tmp_path / "s_enhanced_enhanced").is_dir()
