"""read_image on real files: DICOM series (checked against ITK), DICOM files, NIfTI, PNG/JPEG/TIFF."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from napari_uspmie.errors import ImageReadError
from napari_uspmie.io.dicom import LPS_TO_RAS
from napari_uspmie.io.readers import detect_format, read_image
from tests.io_factories import CT_SMALL, MR_TRUNCATED, ct_volume, write_dicom_series, write_oblique_nifti


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series") / "ct"
    volume = ct_volume(12)
    write_dicom_series(folder, volume)
    (folder / "README.txt").write_text("not an image")
    return folder, volume


@pytest.fixture(scope="module")
def itk_ct(ct_series):
    """The series as read by MONAI's ITKReader: (ITK image, MONAI-layout MetaTensor). ITK loads once per module."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    folder, _ = ct_series
    reader = ITKReader()
    image = reader.read(str(folder))
    tensor = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(folder))
    return image, tensor


def test_ct_series_values_order_and_rescale(ct_series):
    folder, volume = ct_series
    array, meta = read_image(folder)
    assert array.shape == volume.shape and array.dtype == np.int16
    np.testing.assert_array_equal(array, volume)  # slices sorted by position, not by file name
    assert meta["format"] == "dicom-series"
    assert meta["value_range"] == (float(volume.min()), float(volume.max()))
    assert meta["rescale"][0] == (1.0, -1024.0)
    assert meta["stored_dtype"] == "uint16"
    assert [p.endswith("README.txt") for p in meta["skipped_files"]] == [True]
    assert len(meta["dicom_datasets"]) == 12 and "PixelData" not in meta["dicom_datasets"][0]
    np.testing.assert_allclose(meta["spacing"], (2.5, 0.8, 0.7), atol=1e-4)


def test_ct_series_geometry_matches_itk(ct_series, itk_ct):
    folder, _ = ct_series
    array, meta = read_image(folder)
    image, _ = itk_ct
    np.testing.assert_array_equal(np.asarray(image), array)  # ITK: (z, y, x) = (slice, row, column)
    direction = np.asarray(image.GetDirection())  # LPS, columns = index axes x, y, z
    spacing = np.asarray(image.GetSpacing())
    expected = np.eye(4)
    expected[:3, :3] = (direction * spacing)[:, ::-1]  # our index order is (z, y, x)
    expected[:3, 3] = np.asarray(image.GetOrigin())
    np.testing.assert_allclose(meta["affine"], LPS_TO_RAS @ expected, atol=1e-3)
    np.testing.assert_allclose(meta["origin"], meta["affine"][:3, 3])
    assert not np.allclose(meta["direction"], np.diag([-1, -1, 1]))  # really oblique


def test_series_with_float_rescale(tmp_path):
    volume = (ct_volume(4)[:, :40, :50].astype(np.float64) + 1000) * 0.5  # MR-like, 0..1000
    write_dicom_series(tmp_path / "mr", volume, slope=0.5, intercept=0.25, modality="MR")
    array, meta = read_image(tmp_path / "mr")
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, np.rint((volume - 0.25) / 0.5) * 0.5 + 0.25, atol=1e-4)


def test_folder_with_two_series(tmp_path, ct_series):
    folder, volume = ct_series
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    for f in write_dicom_series(tmp_path / "scout", volume[:3], description="SCOUT"):
        shutil.copy(f, mixed / f"scout_{f.name}")
    with pytest.raises(ImageReadError, match="2 DICOM series.*SCOUT"):
        read_image(mixed)
    uid = pydicom.dcmread(next(folder.glob("*.dcm"))).SeriesInstanceUID
    array, _ = read_image(mixed, series_uid=uid)
    assert array.shape[0] == 12


def test_duplicate_slice_positions(tmp_path):
    vol = ct_volume(2)
    write_dicom_series(tmp_path / "a", vol, series_uid="1.2.3.4")
    write_dicom_series(tmp_path / "b", vol, series_uid="1.2.3.4")
    for f in (tmp_path / "b").iterdir():
        shutil.copy(f, tmp_path / "a" / f"echo2_{f.name}")
    with pytest.raises(ImageReadError, match="same slice position|share a slice position"):
        read_image(tmp_path / "a")


def test_ct_small_single_file():
    array, meta = read_image(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    assert detect_format(CT_SMALL) == "dicom"  # its preamble mimics TIFF
    assert array.shape == (128, 128) and array.dtype == np.int16
    np.testing.assert_array_equal(array, ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept))
    np.testing.assert_allclose(
        meta["affine"][:3, 3], [-v if i < 2 else v for i, v in enumerate(ds.ImagePositionPatient)]
    )
    np.testing.assert_allclose(meta["spacing"], [float(v) for v in ds.PixelSpacing])


def test_truncated_and_non_image_files(tmp_path):
    with pytest.raises(ImageReadError, match="MR_truncated.dcm.*pixel data"):
        read_image(MR_TRUNCATED)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="notes.txt: not a supported image"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="fake.png: unreadable PNG"):
        read_image(tmp_path / "fake.png")
    (tmp_path / "dicoms").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM image files"):
        read_image(tmp_path / "dicoms")


def test_oblique_nifti(tmp_path):
    path = tmp_path / "brain.nii.gz"
    img = write_oblique_nifti(path)
    array, meta = read_image(path)
    data = np.asanyarray(img.dataobj)
    assert array.shape == data.shape[::-1] and array.dtype == data.dtype
    np.testing.assert_array_equal(array, data.transpose(2, 1, 0))
    rng = np.random.default_rng(0)
    for i, j, k in rng.integers(0, 20, size=(5, 3)):  # same voxel, same world point
        np.testing.assert_allclose(meta["affine"] @ [k, j, i, 1], img.affine @ [i, j, k, 1], atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], (3.0, 1.1, 0.9), atol=1e-6)
    assert (meta["qform_code"], meta["sform_code"]) == (1, 2)


def test_nifti_4d_and_big_endian(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), tmp_path / "fmri.nii")
    with pytest.raises(ImageReadError, match="fmri.nii: 4D NIfTI"):
        read_image(tmp_path / "fmri.nii")
    data = np.arange(60, dtype=">i2").reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "be.nii")
    array, meta = read_image(tmp_path / "be.nii")
    assert array.dtype.isnative and meta["dtype"] == "int16"
    np.testing.assert_array_equal(array, data.transpose(2, 1, 0))


def test_plain_images(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", dpi=(300, 300))
    array, meta = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(array, rgb)
    assert (meta["format"], meta["channel_axis"], meta["spatial_ndim"], meta["affine"]) == ("png", -1, 2, None)
    assert meta["spacing"] == (1.0, 1.0) and meta["dpi"] == pytest.approx((300, 300), abs=0.01)

    gray16 = (np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    array, meta = read_image(tmp_path / "g16.png")
    assert array.dtype == np.uint16 and meta["channel_axis"] is None
    np.testing.assert_array_equal(array, gray16)

    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    array, meta = read_image(tmp_path / "photo.jpg")
    assert array.shape == rgb.shape and meta["format"] == "jpeg"

    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "pal.png")
    array, meta = read_image(tmp_path / "pal.png")
    assert array.shape == (30, 40, 3) and meta["mode"] == "P"
    grey = rgb[..., 0]  # a palette of greys only is a grey image (not refused as colour)
    Image.fromarray(grey).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "grey_pal.png")
    array, meta = read_image(tmp_path / "grey_pal.png")
    assert array.shape == (30, 40) and meta["channel_axis"] is None and meta["mode"] == "P"
    np.testing.assert_array_equal(array, np.array(Image.open(tmp_path / "grey_pal.png").convert("L")))
    with_alpha = Image.open(tmp_path / "grey_pal.png")
    with_alpha.info["transparency"] = 0
    with_alpha.save(tmp_path / "grey_pal_alpha.png", transparency=0)
    array, meta = read_image(tmp_path / "grey_pal_alpha.png")
    assert array.shape == (30, 40, 2) and meta["channel_axis"] == -1


def test_tiff_layouts(tmp_path):
    stack = np.random.default_rng(1).integers(0, 4096, (5, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    array, meta = read_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(array, stack)
    assert meta["spatial_ndim"] == 3 and meta["channel_axis"] is None

    planar = np.random.default_rng(2).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    array, meta = read_image(tmp_path / "planar.tif")
    np.testing.assert_array_equal(array, planar.transpose(1, 2, 0))
    assert meta["channel_axis"] == -1


def test_monai_reader_matches_monai_layout(ct_series, itk_ct, tmp_path):
    """Through LoadImage, our reader gives MONAI's layout and affine, as MONAI's ITK/Nibabel readers do."""
    from napari_uspmie.bundle.transforms import LoadMedicalImaged

    folder, _ = ct_series
    ours = LoadMedicalImaged("image", image_only=True, ensure_channel_first=True)({"image": str(folder)})["image"]
    _, theirs = itk_ct
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-3)

    path = tmp_path / "brain.nii.gz"
    img = write_oblique_nifti(path)
    ours = LoadMedicalImaged("image", image_only=True)({"image": str(path)})["image"]
    np.testing.assert_array_equal(ours.numpy(), np.asanyarray(img.dataobj))
    np.testing.assert_allclose(ours.affine.numpy(), img.affine, atol=1e-6)
