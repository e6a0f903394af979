"""Derived DICOM output: the enhanced image as a new series of the same study.

Each output file is the source slice's header with:

- a new SeriesInstanceUID (one for the series) and a new SOPInstanceUID per file;
- ImageType ``DERIVED\\SECONDARY\\...``, SeriesDescription ``"<source description> enhanced"``,
  SeriesNumber + 1000, DerivationDescription, and a SourceImageSequence pointing at the source
  slice (so PACS and viewers show where it came from);
- Patient, Study, Frame of Reference, ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, SliceThickness, RescaleSlope/Intercept, window, bits and photometric tags unchanged;
- pixel data converted back to stored values, ``round((value - intercept) / slope)`` clipped to
  what BitsStored and PixelRepresentation can hold, written explicit VR little endian.

Works with pydicom 2 and 3.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

import numpy as np

from napari_uspmie.errors import ImageReadError, ImageWriteError
from napari_uspmie.io.atomic import staged_output

__all__ = ["DERIVATION_DESCRIPTION", "write_derived_dicom", "stored_values", "is_derived_by_package"]

#: DerivationDescription of every instance the package writes: how it recognises its own outputs
DERIVATION_DESCRIPTION = "Structure-preserving enhancement (LaMEGAN, napari-uspmie)"


def is_derived_by_package(path: Path) -> bool:
    """Whether ``path`` is a DICOM instance this package wrote (its DerivationDescription says so)."""
    from napari_uspmie.io.dicom import read_dicom_header

    try:
        header = read_dicom_header(path)
    except ImageReadError:
        return False
    return header is not None and str(header.get("DerivationDescription", "")) == DERIVATION_DESCRIPTION


def stored_values(values: np.ndarray, ds, slope: float, intercept: float) -> np.ndarray:
    """Invert the modality rescale and fit the result into the header's pixel representation."""
    bits_alloc = int(ds.get("BitsAllocated", 16))
    bits = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits_alloc not in (8, 16, 32):
        raise ImageWriteError(f"cannot write {bits_alloc}-bit DICOM pixels.")
    raw = (values.astype(np.float64) - intercept) / slope
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    return np.clip(np.rint(raw), lo, hi).astype(dtype)


def _headers(meta: dict) -> tuple[list, list[str]]:
    """Source headers and file names in array order (read again when the meta lacks them)."""
    import pydicom

    headers, files = meta.get("dicom_datasets"), meta.get("dicom_files")
    if headers is None or files is None:
        if meta["format"] == "dicom-series":
            from napari_uspmie.io.dicom import read_series_headers

            items, _ = read_series_headers(meta["source"], meta.get("series_uid") or None)
            files, headers = [str(p) for p, _ in items], [ds for _, ds in items]
        else:
            files = [meta["source"]]
            headers = [pydicom.dcmread(meta["source"], stop_before_pixels=True)]
    return list(headers), list(files)


def _derive(src, series_uid: str, description_suffix: str, when: tuple[str, str]):
    """Header of the derived instance (no pixel data yet)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    ds = copy.deepcopy(src)
    for tag in ("PixelData", "FloatPixelData", "SmallestImagePixelValue", "LargestImagePixelValue"):
        if tag in ds:
            delattr(ds, tag)
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.get("SOPClassUID", "")
    ref.ReferencedSOPInstanceUID = src.get("SOPInstanceUID", "")
    ds.SourceImageSequence = [ref]
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    image_type = list(src.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    description = str(src.get("SeriesDescription", "") or "").strip()
    ds.SeriesDescription = f"{description} {description_suffix}".strip()[-64:]
    ds.DerivationDescription = DERIVATION_DESCRIPTION
    if str(src.get("SeriesNumber", "") or "").strip().lstrip("-").isdigit():
        ds.SeriesNumber = int(src.SeriesNumber) + 1000
    ds.InstanceCreationDate, ds.InstanceCreationTime = when
    meta = FileMetaDataset()
    if getattr(src, "file_meta", None) is not None:
        meta.update(copy.deepcopy(src.file_meta))
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _set_pixels(ds, stored: np.ndarray, rgb: bool) -> None:
    if rgb:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.add_new(0x7FE00010, "OW" if stored.dtype.itemsize > 1 else "OB", stored.tobytes())


def _save(ds, path: Path) -> None:
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:  # pydicom 2 (e.g. beside MONAI Label)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def write_derived_dicom(
    array: np.ndarray, meta: dict, out_path: Path, description_suffix: str = "enhanced", overwrite: bool = False
) -> None:
    """Write ``array`` as a derived DICOM file (``format == "dicom"``) or series folder (``"dicom-series"``).

    Args:
        array: values in the source's units (after RescaleSlope/Intercept), reader layout.
        meta: reader metadata of the source.
        out_path: output file, or output folder for a series.
        description_suffix: appended to SeriesDescription.
        overwrite: replace an earlier output (a folder only if the package wrote all it holds).

    Raises:
        ImageWriteError: the array does not match the source series, or the output exists.
    """
    from pydicom.uid import generate_uid

    headers, files = _headers(meta)
    rgb = int(headers[0].get("SamplesPerPixel", 1)) > 1
    series_uid = generate_uid()
    now = datetime.datetime.now()
    when = (now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f"))

    def instance(k: int, values: np.ndarray):
        src = headers[k]
        slope = float(src.get("RescaleSlope", 1) or 1)
        intercept = float(src.get("RescaleIntercept", 0) or 0)
        ds = _derive(src, series_uid, description_suffix, when)
        if rgb:
            stored = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        else:
            stored = stored_values(values, src, slope, intercept)
        _set_pixels(ds, stored, rgb)
        return ds

    if meta["format"] == "dicom":
        with staged_output(out_path, overwrite=overwrite) as tmp:
            _save(instance(0, array), tmp)
        return
    if array.shape[0] != len(headers):
        raise ImageWriteError(f"{out_path}: {array.shape[0]} slices for a source series of {len(headers)} files.")
    with staged_output(out_path, folder=True, overwrite=overwrite, written_by_package=is_derived_by_package) as tmp:
        for k, name in enumerate(files):
            _save(instance(k, array[k]), tmp / Path(name).name)
