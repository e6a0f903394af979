"""The napari reader, writers and sample data: geometry survives NIfTI and DICOM round trips."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from napari_uspmie.errors import ImageReadError
from napari_uspmie.io.readers import read_image
from napari_uspmie.plugin.geometry import RAS_TO_WORLD, napari_geometry
from napari_uspmie.plugin.reader import layer_data_tuple, napari_get_reader
from napari_uspmie.plugin.writer import LayerWriteError

pytestmark = pytest.mark.gui

PLUGIN = "napari-uspmie"
ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.fixture(scope="module")
def anatomical() -> np.ndarray:
    """nibabel's real T1 test volume as stored, (i, j, k) = (33, 41, 25), int16."""
    return np.asarray(nib.load(ANATOMICAL).dataobj).astype(np.int16)


@pytest.fixture
def oblique_nifti(tmp_path, anatomical):
    """The real volume with an oblique, anisotropic, shifted affine (qform and sform)."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(np.array([1.0, 2.0, 0.5]), 0.4) @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = (-31.0, 12.5, 40.0)
    img = nib.Nifti1Image(anatomical, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path = tmp_path / "oblique.nii.gz"
    nib.save(img, path)
    return path, affine


def write_series(folder, stored: np.ndarray, spacing=(2.5, 0.9, 0.8), origin=(-100.0, -120.0, 40.0), angle=0.3):
    """Write ``stored`` (D, H, W) int16 as an MR series, files named in reverse slice order.

    The rows are rotated by ``angle`` about the patient z axis; RescaleSlope 2, intercept -100.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir()
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle), np.cos(angle), 0.0])
    normal = np.cross(row, col)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    depth = stored.shape[0]
    for k in range(depth):
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = MRImageStorage
        file_meta.MediaStorageSOPInstanceUID = generate_uid()
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{depth - k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=file_meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Phantom^Test", "P001"
        ds.SeriesDescription = "T1 test"
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * spacing[0] * normal]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    return row, col, normal


def _world_of(layer, index) -> np.ndarray:
    return np.asarray(layer.data_to_world(np.asarray(index, dtype=float)), dtype=float)


def test_get_reader_accepts_only_nifti_and_dicom(tmp_path, oblique_nifti, anatomical):
    path, _ = oblique_nifti
    assert napari_get_reader(str(path)) is not None
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    assert napari_get_reader(str(tmp_path / "notes")) is None
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "plain.png")
    assert napari_get_reader(str(tmp_path / "plain.png")) is None
    write_series(tmp_path / "series", anatomical.transpose(2, 1, 0)[:3])
    assert napari_get_reader(str(tmp_path / "series")) is not None
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08 truncated")
    assert napari_get_reader(str(broken)) is not None  # claimed by suffix ...
    with pytest.raises(ImageReadError, match="broken.nii.gz"):  # ... and the error names the file
        layer_data_tuple(broken)


def test_nifti_geometry_and_round_trip(make_napari_viewer, tmp_path, oblique_nifti, anatomical):
    import napari

    path, affine = oblique_nifti
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == anatomical.shape[::-1]
    assert layer.metadata["format"] == "nifti" and "nifti_header" in layer.metadata
    assert layer.units[0] == "millimeter"
    np.testing.assert_allclose(layer.scale, np.linalg.norm(affine[:3, :3], axis=0)[::-1])
    # every voxel lands where the file's affine puts it (napari world = LPS in z, y, x order)
    for ijk in [(0, 0, 0), (5, 7, 3), (32, 40, 24)]:
        expected = (RAS_TO_WORLD @ affine @ np.r_[ijk, 1.0])[:3]
        np.testing.assert_allclose(_world_of(layer, ijk[::-1]), expected, atol=1e-6)

    # an "enhanced" layer carries the metadata and is written through the source header
    result = viewer.add_image(layer.data + 7, name="oblique enhanced", metadata=layer.metadata)
    out = tmp_path / "out.nii.gz"
    napari.save_layers(str(out), [result], plugin=PLUGIN)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    assert back.get_data_dtype() == np.dtype(">i2") or back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(back.dataobj), anatomical + 7)


def test_dicom_series_geometry_and_derived_round_trip(make_napari_viewer, tmp_path, anatomical):
    import napari

    stored = anatomical.transpose(2, 1, 0)[:6]  # (D, H, W) = (6, 41, 33)
    spacing, origin = (2.5, 0.9, 0.8), np.array([-100.0, -120.0, 40.0])
    row, col, normal = write_series(tmp_path / "series", stored, spacing, origin)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    np.testing.assert_array_equal(layer.data, stored.astype(np.int32) * 2 - 100)
    np.testing.assert_allclose(layer.scale, spacing)
    for kij in [(0, 0, 0), (5, 40, 32), (2, 3, 17)]:
        k, i, j = kij
        lps = origin + k * spacing[0] * normal + i * spacing[1] * col + j * spacing[2] * row
        np.testing.assert_allclose(_world_of(layer, kij), lps[::-1], atol=1e-6)
    np.testing.assert_allclose(layer.translate, origin[::-1])
    assert len(layer.metadata["dicom_datasets"]) == 6

    result = viewer.add_image(layer.data + 20, name="series enhanced", metadata=layer.metadata)
    (written,) = napari.save_layers(str(tmp_path / "derived.dcm"), [result], plugin=PLUGIN)
    assert written == str(tmp_path / "derived")
    back, meta = read_image(written)
    np.testing.assert_array_equal(back, layer.data + 20)
    np.testing.assert_allclose(meta["affine"], layer.metadata["affine"], atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], spacing, atol=1e-6)
    src, derived = layer.metadata["dicom_datasets"][0], meta["dicom_datasets"][0]
    assert derived.StudyInstanceUID == src.StudyInstanceUID
    assert derived.SeriesInstanceUID != src.SeriesInstanceUID
    assert "DERIVED" in list(derived.ImageType)

    # the DICOM layer saved as NIfTI keeps the same world geometry
    (nii,) = napari.save_layers(str(tmp_path / "series.nii.gz"), [result], plugin=PLUGIN)
    again = viewer.open(nii, plugin=PLUGIN)[0]
    for kij in [(0, 0, 0), (5, 40, 32)]:
        np.testing.assert_allclose(_world_of(again, kij), _world_of(layer, kij), atol=1e-4)
    np.testing.assert_array_equal(again.data, result.data)


def test_layer_without_header_saves_its_own_geometry(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    layer = viewer.add_image(data, name="made here", scale=(3.0, 0.5, 0.7), translate=(10.0, -4.0, 2.5))
    (out,) = napari.save_layers(str(tmp_path / "made.nii"), [layer], plugin=PLUGIN)
    again = viewer.open(out, plugin=PLUGIN)[0]
    np.testing.assert_allclose(again.scale, layer.scale)
    np.testing.assert_allclose(again.translate, layer.translate)
    for index in [(0, 0, 0), (3, 4, 5)]:
        np.testing.assert_allclose(_world_of(again, index), _world_of(layer, index), atol=1e-5)
    np.testing.assert_array_equal(again.data, data)

    # no DICOM header to derive from: a clear error, nothing written
    with pytest.raises(LayerWriteError, match="not read from DICOM"):
        napari.save_layers(str(tmp_path / "made.dcm"), [layer], plugin=PLUGIN)
    assert not (tmp_path / "made").exists() and not (tmp_path / "made.dcm").exists()


def test_sample_data_brain_and_degraded_copy(make_napari_viewer):
    from napari_uspmie import lassim

    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "brain_mri_degraded")
    original, degraded = viewer.layers["MNI152 T1"], viewer.layers["MNI152 T1 degraded"]
    assert len(layers) == 2
    assert original.data.shape == degraded.data.shape == (189, 233, 197)
    assert degraded.data.dtype == original.data.dtype == np.uint8
    for key in ("scale", "translate"):
        np.testing.assert_allclose(getattr(degraded, key), getattr(original, key))
    np.testing.assert_allclose(degraded.affine.affine_matrix, original.affine.affine_matrix)
    # the MNI origin (RAS 0, 0, 0) is world 0
    ras_to_index = np.linalg.inv(original.metadata["affine"])
    np.testing.assert_allclose(_world_of(original, (ras_to_index @ [0, 0, 0, 1])[:3]), 0.0, atol=1e-6)
    assert not np.array_equal(degraded.data, original.data)
    mid = 95
    assert lassim(degraded.data[mid], original.data[mid], level=2) < 0.95
    assert degraded.metadata["degradation"]["seed"] == 0


def test_sample_data_unseen_subject_is_the_demo_volume(make_napari_viewer, tmp_path):
    from napari_uspmie.research.demo import prepare_demo_volume

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "unseen_subject_degraded")
    clean, degraded = viewer.layers["unseen subject"], viewer.layers["unseen subject degraded"]
    demo_degraded, demo_clean = prepare_demo_volume(tmp_path)
    # napari shows volumes slices-first; the demo writes RAS x, y, z: same voxels, same world placement.
    expected = np.asanyarray(nib.load(str(demo_degraded)).dataobj)
    assert degraded.data.shape == expected.shape[::-1] == clean.data.shape
    np.testing.assert_array_equal(np.sort(degraded.data, axis=None), np.sort(expected, axis=None))
    np.testing.assert_allclose(degraded.affine.affine_matrix, clean.affine.affine_matrix)
    np.testing.assert_allclose(np.abs(degraded.scale), 1.0)  # the model's 1 mm pixels
    assert not np.array_equal(degraded.data, clean.data)


def test_napari_geometry_plain_images():
    assert napari_geometry({"format": "png", "spacing": (1.0, 1.0), "affine": None}, 2) == {
        "scale": (1.0, 1.0),
        "units": ("pixel", "pixel"),
    }


def test_manifest_is_found_and_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-uspmie")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Enhance (LaMEGAN)", "LaSSIM heatmap"}
    assert {s.key for s in manifest.contributions.sample_data} == {
        "brain_mri",
        "brain_mri_degraded",
        "unseen_subject_degraded",
    }
    manifest.validate_imports()


def test_package_import_pulls_no_gui():
    import subprocess
    import sys

    gui = "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'}"
    code = (
        "import sys, napari_uspmie, napari_uspmie.io.readers, napari_uspmie.io.writers; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {gui}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


def test_single_dicom_file_round_trip(make_napari_viewer, tmp_path):
    import napari
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(source, plugin=PLUGIN)
    header = layer.metadata["dicom_datasets"][0]
    assert layer.data.shape == (128, 128)
    np.testing.assert_allclose(layer.scale, [float(v) for v in header.PixelSpacing])
    result = viewer.add_image(layer.data - 5, name="CT_small enhanced", metadata=layer.metadata)
    (written,) = napari.save_layers(str(tmp_path / "ct_enhanced.dcm"), [result], plugin=PLUGIN)
    back, meta = read_image(written)
    np.testing.assert_array_equal(back, result.data)
    np.testing.assert_allclose(meta["affine"], layer.metadata["affine"], atol=1e-6)
    assert meta["dicom_datasets"][0].SOPInstanceUID != header.SOPInstanceUID
