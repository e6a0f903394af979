"""write_like round trips: NIfTI header/affine, derived DICOM series (pydicom + ITK), 2D formats."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from napari_uspmie.errors import ImageWriteError
from napari_uspmie.io.readers import read_image
from napari_uspmie.io.writers import check_output_dir, enhanced_path, write_like
from tests.io_factories import CT_SMALL, ct_volume, file_hashes, write_dicom_series, write_oblique_nifti


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in") / "ct_series"
    write_dicom_series(folder, ct_volume(12))
    return folder


def test_enhanced_path_names(tmp_path, ct_folder):
    assert enhanced_path("/a/brain.nii.gz", tmp_path) == tmp_path / "brain_enhanced.nii.gz"
    assert enhanced_path("/a/x.png", tmp_path) == tmp_path / "x_enhanced.png"
    assert enhanced_path(ct_folder, tmp_path) == tmp_path / "ct_series_enhanced"


def test_nifti_round_trip_keeps_header(tmp_path):
    src = tmp_path / "brain.nii.gz"
    write_oblique_nifti(src)
    before = file_hashes(tmp_path)
    array, meta = read_image(src)
    out = write_like(array - 7, meta, enhanced_path(src, tmp_path))
    h1, h2 = nib.load(src).header, nib.load(out).header
    for field in h1:  # every header field identical: qform/sform codes and parameters, dims, dtype ...
        if field not in ("cal_min", "cal_max"):
            np.testing.assert_array_equal(h1[field], h2[field], err_msg=field)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(src).affine)
    back, meta2 = read_image(out)
    np.testing.assert_array_equal(back, array - 7)
    assert back.dtype == array.dtype and meta2["qform_code"] == 1 and meta2["sform_code"] == 2
    assert file_hashes(tmp_path) == before | {"brain_enhanced.nii.gz": file_hashes(tmp_path)["brain_enhanced.nii.gz"]}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


def test_nifti_header_only_meta(tmp_path):
    """With only format/source (what crosses MONAI's collation), the header is read again from the source."""
    src = tmp_path / "b.nii"
    write_oblique_nifti(src)
    array, _ = read_image(src)
    out = write_like(array, {"format": "nifti", "source": str(src)}, tmp_path / "out.nii")
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(src).affine)


def _by_position(folder):
    files = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return sorted(files, key=lambda d: float(d.ImagePositionPatient[2]))


def test_derived_dicom_series(tmp_path, ct_folder):
    before = file_hashes(ct_folder)
    array, meta = read_image(ct_folder)
    enhanced = (array.astype(np.int32) + 5).astype(np.int16)
    enhanced[0, 0, 0] = 9000  # beyond 12-bit stored range: clipped to 4095 - 1024
    out = write_like(enhanced, meta, enhanced_path(ct_folder, tmp_path))
    assert out.name == "ct_series_enhanced" and file_hashes(ct_folder) == before
    src, dst = _by_position(ct_folder), _by_position(out)
    assert len(dst) == 12
    assert len({d.SeriesInstanceUID for d in dst}) == 1 and dst[0].SeriesInstanceUID != src[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in dst} | {s.SOPInstanceUID for s in src}) == 24
    for s, d in zip(src, dst, strict=True):
        for tag in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID", "ImagePositionPatient",
                    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept",
                    "BitsStored", "PixelRepresentation", "Modality"):  # fmt: skip
            assert d.get(tag) == s.get(tag), tag
        assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert d.SeriesDescription.endswith("enhanced") and d.SeriesDescription.startswith("AX HEAD")
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == s.SOPInstanceUID
    back, meta2 = read_image(out)
    expected = enhanced.copy()
    expected[0, 0, 0] = 4095 - 1024
    np.testing.assert_array_equal(back, expected)  # HU through RescaleSlope/Intercept
    np.testing.assert_allclose(meta2["affine"], meta["affine"], atol=1e-6)

    import itk  # an independent reader sees the same series and geometry

    names = itk.GDCMSeriesFileNames.New(Directory=str(out))
    image = itk.imread(list(names.GetFileNames(names.GetSeriesUIDs()[0])), itk.SS)
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in dst[0].ImagePositionPatient], atol=1e-3)


def test_derived_series_float_rescale_and_overwrite(tmp_path):
    volume = np.linspace(0, 900, 3 * 20 * 24).reshape(3, 20, 24)
    write_dicom_series(tmp_path / "mr", volume, slope=0.5, intercept=0.25, modality="MR", oblique=False)
    array, meta = read_image(tmp_path / "mr")
    out = tmp_path / "out"
    write_like(array, meta, out)
    with pytest.raises(ImageWriteError, match="already exists"):
        write_like(array * 0 + 100.25, meta, out)
    write_like(array * 0 + 100.25, meta, out, overwrite=True)  # a second write replaces the folder whole
    back, _ = read_image(out)
    np.testing.assert_allclose(back, 100.25)
    assert len(list(out.iterdir())) == 3
    stored = pydicom.dcmread(next(out.iterdir())).pixel_array
    assert stored.dtype == np.uint16 and np.all(stored == 200)  # (100.25 - 0.25) / 0.5


def test_single_dicom_file(tmp_path):
    array, meta = read_image(CT_SMALL)
    out = write_like(array, meta, enhanced_path(CT_SMALL, tmp_path))
    back, meta2 = read_image(out)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(meta2["affine"], meta["affine"])
    ds, src = pydicom.dcmread(out), pydicom.dcmread(CT_SMALL)
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.StudyInstanceUID == src.StudyInstanceUID


@pytest.mark.parametrize("name", ["rgb.png", "g16.png", "photo.jpg", "g16.tif", "rgb.tif", "stack.tif"])
def test_plain_formats(tmp_path, name):
    rng = np.random.default_rng(0)
    src = tmp_path / name
    if name == "rgb.png":
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src, dpi=(200, 200))
    elif name == "g16.png":
        Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16)).save(src)
    elif name == "photo.jpg":
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src, quality=95)
    elif name == "g16.tif":
        tifffile.imwrite(src, rng.integers(0, 65535, (30, 40), dtype=np.uint16), compression="zlib")
    elif name == "rgb.tif":
        tifffile.imwrite(src, rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), photometric="rgb")
    else:
        tifffile.imwrite(src, rng.integers(0, 4096, (4, 30, 40), dtype=np.uint16))
    array, meta = read_image(src)
    out = write_like(array, meta, enhanced_path(src, tmp_path))
    assert out.suffix == src.suffix
    back, meta2 = read_image(out)
    assert back.shape == array.shape and back.dtype == array.dtype and meta2["format"] == meta["format"]
    if name != "photo.jpg":
        np.testing.assert_array_equal(back, array)
    if name == "rgb.png":
        assert meta2["dpi"] == pytest.approx((200, 200), abs=0.01)
    if name == "g16.tif":
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].compression == 8  # zlib kept


def test_refusals_and_failures(tmp_path, ct_folder):
    array, meta = read_image(ct_folder)
    with pytest.raises(ImageWriteError, match="refusing to write over or into the input"):
        write_like(array, meta, ct_folder / "inside")
    with pytest.raises(ImageWriteError, match="shape"):
        write_like(array[:3], meta, tmp_path / "x")
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_like(array, meta, tmp_path / "missing" / "x")
    bad = dict(meta, shape=(3, *array.shape[1:]))  # passes the shape check, fails in the DICOM writer
    with pytest.raises(ImageWriteError, match="3 slices for a source series of 12"):
        write_like(array[:3], bad, tmp_path / "partial")
    assert not (tmp_path / "partial").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageWriteError, match="not writable"):
        check_output_dir(blocker / "sub")
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
