"""Real test files written with pydicom, nibabel, tifffile and PIL from images shipped in packages."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_uspmie.inference.checkpoint import shipped_architecture

MNI = (
    Path(importlib.util.find_spec("nilearn").origin).parent
    / "datasets"
    / "data"
    / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
MR_TRUNCATED = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_truncated.dcm"
#: the shipped generator's architecture, read where the bundle keeps it (never written in tests)
SHIPPED = shipped_architecture()


@functools.lru_cache(maxsize=1)
def _mni() -> np.ndarray:
    return np.asanyarray(nib.load(str(MNI)).dataobj)  # (x, y, z) uint8


def mni_slices(n: int = 12, step: int = 3) -> np.ndarray:
    """``(n, H, W)`` axial slices of the MNI152 T1 template (uint8), subsampled by ``step``."""
    data = _mni()
    z0 = data.shape[2] // 2 - n * step // 2
    vol = data[::step, ::step, z0 : z0 + n * step : step]  # (x, y, z)
    return np.ascontiguousarray(vol.transpose(2, 1, 0))  # (z, y, x): slices, rows, columns


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    *,
    spacing=(2.5, 0.8, 0.7),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    oblique: bool = True,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "AX HEAD",
    bits_stored: int = 12,
    signed: bool = False,
) -> list[Path]:
    """Write ``volume`` (``(D, H, W)``, values in output units e.g. HU) as one file per slice.

    Proper ImagePositionPatient (along the true normal of an oblique ImageOrientationPatient),
    PixelSpacing, SliceThickness, RescaleSlope/Intercept, Study/Series/SOP/FrameOfReference UIDs.
    Files are named so that their order on disk is not the slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rot = rotation(12.0, 8.0) if oblique else np.eye(3)
    row_dir, col_dir = rot[:, 0], rot[:, 1]  # LPS
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-60.0, -80.0, 30.0])
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    stored = np.rint((volume.astype(np.float64) - intercept) / slope)
    dtype = np.int16 if signed else np.uint16
    assert stored.min() >= np.iinfo(dtype).min and stored.max() < 2**bits_stored, "values do not fit the bits"
    stored = stored.astype(dtype)
    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    paths = []
    order = np.random.default_rng(0).permutation(volume.shape[0])
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "UID123", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "A1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 3, k + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * spacing[0] * normal]
        ds.PixelSpacing = [f"{spacing[1]}", f"{spacing[2]}"]
        ds.SliceThickness = f"{spacing[0]}"
        ds.SpacingBetweenSlices = f"{spacing[0]}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.PixelData = stored[k].tobytes()
        path = folder / f"IM{order[k]:04d}.dcm"
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(path, enforce_file_format=True)
        else:  # pydicom 2, as beside MONAI Label
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def ct_volume(n: int = 12) -> np.ndarray:
    """A CT-like int16 volume in HU (-1000 air .. ~1000 bone) from the MNI template."""
    return (mni_slices(n).astype(np.int16) * 8 - 1000).astype(np.int16)


def write_oblique_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel's anatomical.nii (int16 T1) with an oblique, anisotropic affine; sform code 2, qform code 1."""
    src = nib.load(str(ANATOMICAL))
    data = np.asanyarray(src.dataobj).astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = rotation(15.0, -10.0) @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-20.0, 35.5, 12.25]
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return img


def write_rgb_png(path: Path, size=(96, 80)) -> np.ndarray:
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.retina()).resize(size, Image.Resampling.BOX)
    img.save(path)
    return np.asarray(img)


def write_tiff16(path: Path) -> np.ndarray:
    import tifffile

    image = (mni_slices(1, 2)[0].astype(np.uint16) * 257)[:100, :90]
    tifffile.imwrite(path, image, photometric="minisblack")
    return image


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (to prove inputs were not modified)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def random_bundle(dest: Path, kwargs: dict | None = None, seed: int = 0) -> Path:
    """Copy of the repository's bundle with random-init weights of ``kwargs`` (default: the shipped architecture)."""
    from napari_uspmie.io.packaged_data import bundle_path
    from napari_uspmie.models.networks import ResnetGenerator

    shutil.copytree(bundle_path(), dest, ignore=shutil.ignore_patterns("*.pt", "*.ts", "runs", "eval"))
    kwargs = dict(kwargs or SHIPPED)
    torch.manual_seed(seed)
    net = ResnetGenerator(**kwargs)
    (dest / "models").mkdir(exist_ok=True)
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    (dest / "models" / "model_config.json").write_text(json.dumps(kwargs))
    return dest
