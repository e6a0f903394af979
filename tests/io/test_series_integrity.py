"""Series that cannot make one volume are refused; unusable geometry is read as unknown, and said so.

Every file is real: DICOM series written by the project's factory and edited with pydicom, NIfTI
headers written with nibabel (raw codes and pixdims kept as written).
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_uspmie.errors import ImageReadError
from napari_uspmie.inference.geometry import resample_factors
from napari_uspmie.inference.pipeline import slice_spacing
from napari_uspmie.io.readers import read_image
from napari_uspmie.io.writers import write_like
from tests.io_factories import ct_volume, write_dicom_series

#: the spacing (slice, row, column) of the series written here, in mm
SPACING = (2.5, 0.8, 0.7)


@pytest.fixture(scope="module")
def series_source(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A sound 6-slice oblique CT series and its files in slice order (copied, never edited)."""
    folder = tmp_path_factory.mktemp("source") / "ct"
    return folder, write_dicom_series(folder, ct_volume(6)[:, :40, :36], spacing=SPACING)


@pytest.fixture()
def series(series_source, tmp_path) -> tuple[Path, list[Path]]:
    """A copy of the sound series to damage, with its files in slice order."""
    folder, files = series_source
    copy = tmp_path / "series"
    shutil.copytree(folder, copy)
    return copy, [copy / f.name for f in files]


def _edit(path: Path, **elements) -> None:
    """Set (or, for ``None``, delete) DICOM elements of the file at ``path``."""
    ds = pydicom.dcmread(path)
    for keyword, value in elements.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def _read_quietly(path: Path) -> tuple[dict, list[warnings.WarningMessage]]:
    """``read_image``'s metadata and every warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, meta = read_image(path)
    return meta, caught


def _read_array(path: Path) -> np.ndarray:
    """``read_image``'s array, its warnings (tested elsewhere) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_image(path)[0]


def _only_warning(caught: list[warnings.WarningMessage]) -> str:
    """The one warning of a read: numpy's RuntimeWarnings or any other line would be a failure."""
    assert [w.category for w in caught] == [UserWarning], [str(w.message) for w in caught]
    return str(caught[0].message)


def test_sound_series_reads_without_warning(series):
    folder, _ = series
    meta, caught = _read_quietly(folder)
    assert caught == [] and meta["geometry_problem"] is None
    np.testing.assert_allclose(meta["spacing"], SPACING, atol=1e-4)


def test_slice_cut_in_its_header_is_refused_by_name(series):
    folder, files = series
    files[2].write_bytes(files[2].read_bytes()[:300])
    with pytest.raises(
        ImageReadError, match=rf"^{re.escape(str(folder))}: 1 DICOM image file\(s\) are cut short.*\({files[2].name}\)"
    ):
        read_image(folder)


def test_files_that_are_no_images_are_still_skipped(series):
    folder, files = series
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: a report, never an image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = Dataset()
    report.file_meta = meta
    report.SOPClassUID, report.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    report.SeriesInstanceUID, report.Modality = pydicom.dcmread(files[0]).SeriesInstanceUID, "SR"
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not an image")
    array, meta = read_image(folder)
    assert array.shape[0] == 6 and sorted(Path(p).name for p in meta["skipped_files"]) == ["notes.txt", "report.dcm"]


def test_slice_cut_in_its_pixels_names_the_file_and_the_fix(series):
    folder, files = series
    files[3].write_bytes(files[3].read_bytes()[:-500])
    with pytest.raises(
        ImageReadError,
        match=rf"{re.escape(str(files[3]))}: cannot decode.*slice of {re.escape(str(folder))}: copy or export",
    ):
        read_image(folder)


def test_missing_slice_is_a_gap(series):
    folder, files = series
    files[3].unlink()
    gap = rf"^{re.escape(str(folder))}: the slice positions jump by 5 mm between {files[2].name} and {files[4].name}"
    with pytest.raises(ImageReadError, match=gap):
        read_image(folder)


def test_first_and_last_slices_missing_leave_no_gap(series):
    folder, files = series
    files[0].unlink()
    files[-1].unlink()
    array, meta = read_image(folder)
    assert array.shape[0] == 4
    np.testing.assert_allclose(meta["spacing"], SPACING, atol=1e-4)


def test_slice_of_another_orientation_is_refused(series):
    folder, files = series
    _edit(files[4], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # a sagittal slice among oblique axial ones
    with pytest.raises(
        ImageReadError, match=rf"^{re.escape(str(folder))}: {files[4].name} has ImageOrientationPatient 0\\1\\0.*share"
    ):
        read_image(folder)


def test_orientation_within_tolerance_is_the_same(series):
    folder, files = series
    iop = [float(v) for v in pydicom.dcmread(files[1]).ImageOrientationPatient]
    _edit(files[1], ImageOrientationPatient=[f"{v + 5e-5:.7f}" for v in iop])  # rounding, not another plane
    array, _ = read_image(folder)
    assert array.shape[0] == 6


def test_degenerate_orientation_of_a_series_is_refused(series):
    folder, files = series
    for path in files:
        _edit(path, ImageOrientationPatient=[0, 0, 0, 0, 0, 0])
    with pytest.raises(
        ImageReadError, match=rf"^{re.escape(str(folder))}: ImageOrientationPatient is '0\\0.*cannot be ordered"
    ):
        read_image(folder)


def test_slices_without_position_among_placed_ones_are_refused(series):
    folder, files = series
    _edit(files[1], ImagePositionPatient=None)
    with pytest.raises(ImageReadError, match=rf"^{re.escape(str(folder))}: 1 of 6 slices have no ImagePositionPatient"):
        read_image(folder)


@pytest.mark.parametrize(
    ("orientation", "shown"),
    [([0, 0, 0, 0, 0, 0], r"0\\0\\0\\0\\0\\0"), ([1, 0, 0, 0.6, 0.8, 0], r"1\\0\\0\\0.6\\0.8\\0")],
    ids=["all zero", "not perpendicular"],
)
def test_degenerate_orientation_of_a_file_is_unknown_geometry(series, orientation, shown):
    _, files = series
    _edit(files[0], ImageOrientationPatient=orientation)
    meta, caught = _read_quietly(files[0])
    assert meta["affine"] is None and slice_spacing(meta) is None
    message = _only_warning(caught)
    assert message.startswith(f"{files[0]}: ImageOrientationPatient is '") and "geometry taken as unknown" in message
    assert re.search(shown, message) and "dcmodify" in message


@pytest.mark.parametrize(
    ("spacing", "problem"),
    [
        (None, "no PixelSpacing"),
        (["0", "0"], r"PixelSpacing is '0\0', not two positive numbers"),
        (["-0.8", "0.7"], r"PixelSpacing is '-0.8\0.7', not two positive numbers"),
    ],
    ids=["absent", "zero", "negative"],
)
def test_unusable_pixel_spacing_is_unknown_not_one_mm(series, spacing, problem):
    _, files = series
    _edit(files[0], PixelSpacing=spacing)
    meta, caught = _read_quietly(files[0])
    assert meta["affine"] is None and slice_spacing(meta) is None  # "pixel size unknown", never "1 x 1 mm"
    assert _only_warning(caught).startswith(f"{files[0]}: {problem}; geometry taken as unknown")


def test_series_without_pixel_spacing_is_read_with_unknown_geometry(series):
    folder, files = series
    for path in files:
        _edit(path, PixelSpacing=None)
    meta, caught = _read_quietly(folder)
    assert meta["affine"] is None and slice_spacing(meta) is None and meta["shape"][0] == 6
    assert _only_warning(caught).startswith(f"{folder}: no PixelSpacing; geometry taken as unknown")


def _nifti(path: Path, affine: np.ndarray | None, pixdim=(1.0, 1.0, 1.0), codes=(0, 0)) -> Path:
    """A 3D NIfTI whose sform (``affine``), codes ``(sform, qform)`` and pixdims are stored exactly so."""
    img = nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), None)
    hdr = img.header
    hdr["pixdim"][1:4] = pixdim
    if affine is not None:
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[:3]
    hdr["sform_code"], hdr["qform_code"] = codes
    img.update_header = lambda: None  # nibabel would rewrite the sform from the image's affine
    nib.save(img, str(path))
    return path


def test_nifti_with_a_singular_sform_is_unknown_geometry_and_written_as_it_came(tmp_path):
    singular = np.diag([0.9, 1.1, 3.0, 1.0])
    singular[:3, 0] = 0.0  # the first voxel axis has no length in the world
    source = _nifti(tmp_path / "singular.nii.gz", singular, codes=(2, 0))
    meta, caught = _read_quietly(source)
    assert meta["affine"] is None and meta["spacing"] == (1.0, 1.0, 1.0) and slice_spacing(meta) is None
    message = _only_warning(caught)
    assert message.startswith(f"{source}: its sform is singular (voxel axes 0 x 1.1 x 3 mm long)")
    assert "set_sform" in message
    write_like(_read_array(source), meta, tmp_path / "out.nii.gz")
    written = nib.load(str(tmp_path / "out.nii.gz")).header
    np.testing.assert_array_equal(written["srow_x"], singular[0])  # the output keeps the input's geometry
    assert int(written["sform_code"]) == 2


def test_nifti_with_a_non_finite_sform_is_unknown_geometry(tmp_path):
    broken = np.diag([1.0, 1.0, 1.0, 1.0])
    broken[1, 1] = np.nan
    source = _nifti(tmp_path / "nan.nii", broken, codes=(1, 0))
    meta, caught = _read_quietly(source)
    assert meta["affine"] is None and "its sform holds NaN or infinite values" in _only_warning(caught)


@pytest.mark.parametrize(("pixdim", "shown"), [((0.0, 1.0, 2.0), "0 x 1 x 2"), ((-1.0, -1.0, 2.0), "-1 x -1 x 2")])
def test_nifti_pixdim_not_positive_is_unknown_spacing_in_our_words(tmp_path, caplog, capfd, pixdim, shown):
    source = _nifti(tmp_path / "pixdim.nii", None, pixdim)
    with caplog.at_level(logging.DEBUG):
        meta, caught = _read_quietly(source)
    assert meta["affine"] is None and slice_spacing(meta) is None
    message = _only_warning(caught)
    assert message.startswith(
        f"{source}: pixdim (voxel size) {shown} is not positive (the output's header gets 1 x 1 x 2)"
    )
    assert "pixdim[1,2,3]" not in caplog.text + capfd.readouterr().err  # nibabel's line names no file


def test_resampling_needs_positive_finite_pixel_sizes():
    assert resample_factors((2.0, 2.0), (1.0, 1.0)) == (2.0, 2.0)
    for broken in ((1.0, 0.0), (-2.0, 2.0), (float("nan"), 1.0), (float("inf"), 1.0), (1.0,)):
        assert resample_factors(broken, (1.0, 1.0)) is None, broken
        assert resample_factors((1.0, 1.0), broken) is None, broken
