"""Unpaired training data: discovery, cheap validation of files, MONAI transforms, bad inputs."""

from __future__ import annotations

import gzip
import logging
import shutil

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from PIL import Image
from skimage import data

from napari_uspmie.training.data import (
    DatasetError,
    UnpairedDataset,
    check_training_sizes,
    scan_domain,
    scan_unpaired_dataset,
    validation_items,
)
from napari_uspmie.training.transforms import (
    LoadImageSliced,
    ResizeAntialiasd,
    ScaleToUnitRanged,
    SourceReadError,
    ToChannelsd,
)
from tests.unpaired_data import ANATOMICAL, CT_SMALL, camera_crops, write_unpaired_dataset

# ITK's SWIG bindings warn on import under Python 3.11+; nothing to act on.
pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")


def pipeline(channels: int = 1, load_size=(64, 64), patch: int | None = None) -> Compose:
    steps = [
        LoadImageSliced("image"),
        ToChannelsd("image", channels),
        ScaleToUnitRanged("image"),
        ResizeAntialiasd("image", load_size),
    ]
    if patch:
        steps += [RandSpatialCropd("image", (patch, patch), random_size=False), RandFlipd("image", 0.5, 1)]
    return Compose(steps)


def write_dicom_series(folder, volume: np.ndarray) -> None:
    """A real multi-file CT series (one file per slice, positions along z) built from CT_small."""
    folder.mkdir(parents=True)
    template = pydicom.dcmread(CT_SMALL)
    series_uid = pydicom.uid.generate_uid()
    for k, plane in enumerate(volume):
        ds = template.copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * 2.5]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = plane.astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{k:03d}")  # no extension: recognised by the DICM preamble


@pytest.fixture()
def mixed_dataset(tmp_path):
    root = write_unpaired_dataset(tmp_path / "ds", n_png=2, nifti_slices=3)
    rgb = data.astronaut()[::4, ::4]  # 128x128 RGB
    Image.fromarray(rgb).save(root / "B" / "rgb.jpg")
    Image.fromarray(rgb).convert("RGBA").save(root / "B" / "rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "B" / "palette.png")
    Image.fromarray(camera_crops(1)[0].astype(np.uint16) * 200).save(root / "A" / "sixteen.tif")
    (root / "A" / "notes.txt").write_text("not an image")
    (root / "A" / ".hidden.png").write_bytes(b"")
    return root


def test_discovers_every_supported_kind(mixed_dataset):
    data_ = scan_unpaired_dataset(mixed_dataset)
    names_a = sorted(item["name"] for item in data_["A"])
    assert names_a == ["blurred0.png", "blurred1.png", "sixteen.tif", "t1.nii.gz[0]", "t1.nii.gz[1]", "t1.nii.gz[2]"]
    kinds_b = {item["name"]: item["kind"] for item in data_["B"]}
    assert kinds_b == {
        "ct.dcm": "dicom",
        "palette.png": "image",
        "rgb.jpg": "image",
        "rgba.png": "image",
        "sharp0.png": "image",
        "sharp1.png": "image",
    }
    assert scan_domain(mixed_dataset / "A").ignored == [str(mixed_dataset / "A" / "notes.txt")]


def test_volume_slices_along_configurable_axis(tmp_path):
    root = tmp_path / "A"
    root.mkdir()
    shutil.copy(ANATOMICAL, root / "anat.nii")  # 33 x 41 x 25 T1 volume, int16
    shape = nibabel.load(str(ANATOMICAL)).shape[::-1]  # the package's (D, H, W) = NIfTI (k, j, i)
    for axis in range(3):
        assert len(scan_domain(root, slice_axis=axis).items) == shape[axis]
    item = scan_domain(root, slice_axis=1).items[7]
    out = LoadImageSliced("image")(dict(item))
    volume = np.asanyarray(nibabel.load(str(ANATOMICAL)).dataobj)
    # Slice 7 along j (Y) of (k, j, i); rows = Z, columns = X; intensities kept until scaling.
    np.testing.assert_array_equal(out["image"][0], volume[:, 7, :].T.astype(np.float32))
    low, high = out["image_bounds"]
    assert (low, high) == tuple(np.percentile(volume, [0.5, 99.5]))  # window of the whole volume


def test_dicom_series_folder_is_one_volume(tmp_path):
    volume = np.asanyarray(nibabel.load(str(ANATOMICAL)).dataobj)[:, :, 8:12].transpose(2, 1, 0)  # (4, 41, 33)
    write_dicom_series(tmp_path / "A" / "series1", volume)
    items = scan_domain(tmp_path / "A").items
    assert [i["kind"] for i in items] == ["dicom_series"] * 4
    out = LoadImageSliced("image")(dict(items[2]))  # sorted by ImagePositionPatient, as at inference
    assert out["image"].shape == (1, 41, 33)  # (rows, cols) of each DICOM file
    template = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    hounsfield = volume[2] * float(template.RescaleSlope) + float(template.RescaleIntercept)
    np.testing.assert_allclose(out["image"][0], hounsfield, atol=1e-3)


def test_multiframe_dicom_file_gives_one_item_per_frame(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    base = ds.pixel_array
    frames = np.stack([np.roll(base[:, :40], 7 * k, axis=0) for k in range(5)])  # (5, 128 rows, 40 cols)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 128, 40, 5
    ds.PixelData = frames.astype(base.dtype).tobytes()
    (tmp_path / "A").mkdir()
    ds.save_as(tmp_path / "A" / "cine.dcm")
    items = scan_domain(tmp_path / "A").items
    assert [i["name"] for i in items] == [f"cine.dcm[{k}]" for k in range(5)]
    out = LoadImageSliced("image")(dict(items[3]))
    expected = frames[3] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(out["image"][0], expected)


def test_transforms_scale_channels_and_crop(mixed_dataset):
    data_ = scan_unpaired_dataset(mixed_dataset)
    by_name = {i["name"]: i for i in data_["A"] + data_["B"]}
    eight_bit = pipeline(1)(dict(by_name["sharp0.png"]))["image"]
    crop = camera_crops(1)[0].astype(np.float32) / 127.5 - 1
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(crop)[None, None], size=(64, 64), mode="bicubic", antialias=True
    ).clamp(-1, 1)[0]
    torch.testing.assert_close(eight_bit, expected, atol=1e-5, rtol=0)  # full 8-bit range -> [-1, 1]
    sixteen = pipeline(1)(dict(by_name["sixteen.tif"]))["image"]
    assert float(sixteen.min()) == -1.0 and float(sixteen.max()) == 1.0  # percentile window, clipped
    for name in ("rgb.jpg", "rgba.png", "palette.png", "ct.dcm", "t1.nii.gz[1]"):
        gray = pipeline(1, patch=48)(dict(by_name[name]))["image"]
        rgb = pipeline(3, patch=48)(dict(by_name[name]))["image"]
        assert gray.shape == (1, 48, 48) and rgb.shape == (3, 48, 48), name
        assert -1.0 <= float(gray.min()) and float(gray.max()) <= 1.0
    rgb_img = pipeline(3, load_size=(128, 128))(dict(by_name["rgb.jpg"]))["image"]
    gray_img = pipeline(1, load_size=(128, 128))(dict(by_name["rgb.jpg"]))["image"]
    luma = (rgb_img * torch.tensor([0.2125, 0.7154, 0.0721]).view(3, 1, 1)).sum(0)
    torch.testing.assert_close(gray_img[0], luma, atol=1e-5, rtol=0)


def test_small_images_are_resized_before_cropping(tmp_path):
    Image.fromarray(camera_crops(1)[0][:20, :30]).save(tmp_path / "tiny.png")
    item = scan_domain(tmp_path).items[0]
    out = pipeline(1, load_size=(272, 480), patch=256)(dict(item))["image"]
    assert out.shape == (1, 256, 256)


def test_unpaired_dataset_pairs_every_a_with_random_b(mixed_dataset):
    data_ = scan_unpaired_dataset(mixed_dataset)
    ds = UnpairedDataset(data_, transform=pipeline(1, patch=32))
    assert len(ds) == max(len(data_["A"]), len(data_["B"]))
    torch.manual_seed(0)
    names_b = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["A"].shape == item["B"].shape == (1, 32, 32)
        assert item["A_name"] == data_["A"][i % len(data_["A"])]["name"]
        names_b.add(item["B_name"])
    assert len(names_b) > 1
    cached = UnpairedDataset(data_, transform=pipeline(1, patch=32), cache_rate=1.0)
    assert cached[0]["A"].shape == (1, 32, 32)


def test_validation_items_spread_over_domain_a(mixed_dataset):
    data_ = scan_unpaired_dataset(mixed_dataset)
    picked = validation_items(data_, 3)
    assert len(picked) == 3 and len({p["name"] for p in picked}) == 3
    assert validation_items(data_, 100) == data_["A"] and validation_items(data_, 0) == []


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "no dataset_dir given"),
        ("nothing", "does not exist"),
        ("only_b", "lacks A/"),
        ("neither", "lacks A/ and B/"),
        ("empty_a", "domain A .* no usable images .*no image files found"),
    ],
)
def test_bad_dataset_layouts(tmp_path, layout, message):
    root = tmp_path / "ds"
    if layout in ("only_b", "empty_a"):
        write_unpaired_dataset(root, n_png=1, nifti_slices=1)
        shutil.rmtree(root / "A")
        if layout == "empty_a":
            (root / "A").mkdir()
    elif layout == "neither":
        root.mkdir()
    with pytest.raises(DatasetError, match=message):
        scan_unpaired_dataset(None if layout is None else root)


def test_unreadable_files_are_named_and_skipped(tmp_path, caplog):
    root = write_unpaired_dataset(tmp_path / "ds", n_png=1, nifti_slices=1)
    good = (root / "A" / "blurred0.png").read_bytes()
    (root / "A" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "A" / "empty.jpg").write_bytes(b"")
    (root / "A" / "fake.nii.gz").write_bytes(gzip.compress(b"no header here"))
    (root / "A" / "text.dcm").write_text("hello")
    packed = (root / "A" / "t1.nii.gz").read_bytes()  # header and gzip trailer intact, the middle cut out
    (root / "A" / "cut.nii.gz").write_bytes(packed[:400] + packed[len(packed) // 2 :])
    with caplog.at_level(logging.WARNING, logger="napari_uspmie.training.data"):
        data_ = scan_unpaired_dataset(root)
    assert sorted(i["name"] for i in data_["A"]) == ["blurred0.png", "t1.nii.gz[0]"]
    for name in ("truncated.png", "empty.jpg", "fake.nii.gz", "text.dcm", "cut.nii.gz"):
        assert name in caplog.text
    assert "empty file" in caplog.text
    assert "truncated or corrupt compressed data" in caplog.text


@pytest.mark.parametrize("cache_rate", [0.0, 1.0])
def test_file_failing_at_load_time_is_skipped_by_name(tmp_path, caplog, cache_rate):
    root = write_unpaired_dataset(tmp_path / "ds", n_png=2, nifti_slices=1)
    data_ = scan_unpaired_dataset(root)
    broken = root / "A" / "blurred0.png"
    broken.write_bytes(broken.read_bytes()[:60])  # damaged after the scan (a copy still running, a bad disk)
    with caplog.at_level(logging.WARNING, logger="napari_uspmie.training.data"):
        ds = UnpairedDataset(data_, transform=pipeline(1, patch=32), cache_rate=cache_rate)
        names = [ds[i]["A_name"] for i in range(len(ds))]
    assert "blurred0.png" not in names and "blurred1.png" in names
    assert caplog.text.count("skipping unreadable file blurred0.png") == 1  # found once, then left out
    for png in (root / "A").glob("*.png"):
        png.write_bytes(b"")
    (root / "A" / "t1.nii.gz").write_bytes(b"")
    emptied = UnpairedDataset(data_, transform=pipeline(1, patch=32))
    with pytest.raises(DatasetError, match="domain A .* no readable images left"):
        emptied[0]


def test_domain_of_only_bad_files_stops_with_their_names(tmp_path):
    root = write_unpaired_dataset(tmp_path / "ds", n_png=1, nifti_slices=1)
    for f in (root / "B").iterdir():
        f.unlink()
    (root / "B" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"domain B \(high-quality\).*broken\.png"):
        scan_unpaired_dataset(root)


def test_file_failing_at_load_time_is_named(tmp_path):
    nifti = tmp_path / "cut.nii"
    full = ANATOMICAL.read_bytes()
    nifti.write_bytes(full[: len(full) // 3])  # header intact, voxels missing
    item = {"image": str(nifti), "kind": "nifti", "slice": 0, "axis": 0, "name": "cut.nii"}
    with pytest.raises(SourceReadError, match="cut.nii"):
        LoadImageSliced("image")(item)


def test_training_size_checks():
    assert check_training_sizes([272, 480], 256)
    with pytest.raises(ValueError, match="multiples of 4"):
        check_training_sizes([270, 480], 256)
    with pytest.raises(ValueError, match="larger than load_size"):
        check_training_sizes([128, 128], 256)
    with pytest.raises(ValueError, match="too small for LaSSIM"):
        check_training_sizes([40, 40], 32)
    with pytest.raises(ValueError, match="'lassim' loss") as caught:
        check_training_sizes([64, 64], 32, perceptual_loss="lassim")
    # an explained error: the bundle's hook shows its message alone, without a traceback
    from napari_uspmie.errors import ExplainedError

    assert isinstance(caught.value, ExplainedError)


def test_a_header_claiming_more_voxels_than_its_file_holds_counts_for_nothing(tmp_path):
    root = write_unpaired_dataset(tmp_path / "ds", n_png=1, nifti_slices=1)
    header = nibabel.Nifti1Header()
    header.set_data_shape((1200, 1200, 1200))
    header.set_data_dtype(np.int16)
    (root / "A" / "liar.nii").write_bytes(header.binaryblock + b"\x00" * 68)
    scan = scan_domain(root / "A")
    assert not any(i["name"].startswith("liar.nii") for i in scan.items)
    assert [p for p, reason in scan.bad if "header declares" in reason] == [str(root / "A" / "liar.nii")]
