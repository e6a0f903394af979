"""napari writers: an image layer to NIfTI, or to a derived DICOM series.

Both go through :func:`napari_uspmie.io.writers.write_like`, the writer of the command line and
the bundle, with the reader's metadata that the layer carries (the plugin's reader stores
it in ``layer.metadata`` and the enhance widget copies it to its result):

- **NIfTI**: a layer read from NIfTI is written with its source header (identical
  qform/sform and on-disk type). Any other layer (read from DICOM, a sample, a heatmap, a
  layer made in napari) gets a new NIfTI header whose affine is the source's RAS affine
  when it has one, else the layer's own world placement (scale, translate, rotate, shear,
  affine; see :mod:`napari_uspmie.plugin.geometry`).
- **DICOM**: a layer read from DICOM is written as a *derived* series (same patient,
  study and geometry, new series and instance UIDs) into a folder named like the chosen
  path without ``.dcm``; a single DICOM file is written as one derived file. Other layers
  have no DICOM header to derive from: save them as NIfTI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_uspmie.errors import ImageWriteError

__all__ = ["LayerWriteError", "write_nifti", "write_dicom", "nifti_meta_for"]


class LayerWriteError(RuntimeError):
    """A layer could not be saved; the message names the path and the problem.

    napari treats a ``ValueError`` raised by a writer as "this writer does not apply" and
    shows only a generic warning, so the writers re-raise the package's ``ImageWriteError``
    (a ``ValueError``) as this error, whose message napari shows.
    """


_SOURCE_FORMATS = ("nifti", "dicom", "dicom-series")
#: NIfTI-1 voxel types; anything else is stored as float32
_NIFTI_DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64")


def _source_meta(data: np.ndarray, attributes: dict) -> dict | None:
    """The reader's metadata carried by the layer, if it still describes this array."""
    meta = attributes.get("metadata") or {}
    if meta.get("format") in _SOURCE_FORMATS and tuple(meta.get("shape", ())) == tuple(data.shape):
        return meta
    return None


def nifti_meta_for(data: np.ndarray, attributes: dict) -> tuple[np.ndarray, dict]:
    """A reader-style metadata dict (with a fresh NIfTI header) for a layer that was not read from NIfTI.

    Args:
        data: the layer's array, ``(H, W)`` or ``(D, H, W)``.
        attributes: the layer's state as napari hands it to writers.

    Returns:
        ``(array, meta)`` where a 2D array became one slice ``(1, H, W)``.

    Raises:
        ImageWriteError: RGB or more than 3 dimensions (NIfTI here holds gray images).
    """
    import nibabel as nib

    from napari_uspmie.plugin.geometry import layer_to_ras_affine

    if attributes.get("rgb") or data.ndim not in (2, 3):
        kind = " (RGB)" if attributes.get("rgb") else ""
        raise ImageWriteError(
            f"NIfTI output takes 2D or 3D gray images, got shape {data.shape}{kind}; "
            "save colour images as PNG or TIFF with napari's built-in writer."
        )
    meta = attributes.get("metadata") or {}
    if meta.get("affine") is not None and tuple(meta.get("shape", ())) == tuple(data.shape) and data.ndim == 3:
        ras = np.asarray(meta["affine"], dtype=float)  # e.g. a DICOM series: keep its exact geometry
    else:
        ras = layer_to_ras_affine(attributes, data.ndim)
    volume = data[None] if data.ndim == 2 else data
    dtype = volume.dtype if volume.dtype.name in _NIFTI_DTYPES else np.dtype(np.float32)
    if volume.dtype == bool:
        dtype = np.dtype(np.uint8)
    # NIfTI stores (i, j, k); the readers' arrays are (k, j, i): reverse the axes of the affine too
    reverse = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(volume.shape[::-1])
    header.set_xyzt_units("mm")
    header.set_qform(ras @ reverse, code=1)
    header.set_sform(ras @ reverse, code=1)
    # no file behind the layer: name it (write_like only compares the source with the output path)
    source = f"<napari layer {attributes.get('name', 'image')}>"
    return volume, {"format": "nifti", "nifti_header": header, "shape": volume.shape, "source": source}


def write_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer: save an image layer as ``.nii`` / ``.nii.gz``.

    Returns:
        The written path (napari's writer protocol).

    Raises:
        LayerWriteError: the layer cannot be stored as NIfTI, or the file cannot be written.
    """
    from napari_uspmie.io.writers import write_like

    try:
        array = np.asarray(data)
        meta = _source_meta(array, attributes)
        if meta is None or meta["format"] != "nifti":
            array, meta = nifti_meta_for(array, attributes)
        # napari's save dialog has already asked before replacing a file (never the layer's source)
        return [str(write_like(array, meta, path, overwrite=True))]
    except ValueError as e:
        raise LayerWriteError(str(e)) from e


def write_dicom(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer: save a layer read from DICOM as a derived DICOM series (or file).

    Returns:
        The written folder (series) or file (single image).

    Raises:
        LayerWriteError: the layer carries no DICOM header of its shape, or writing failed.
    """
    from napari_uspmie.io.writers import write_like

    array = np.asarray(data)
    meta = _source_meta(array, attributes)
    if meta is None or meta["format"] not in ("dicom", "dicom-series"):
        name = attributes.get("name", "this layer")
        raise LayerWriteError(
            f"{path}: '{name}' was not read from DICOM (or its shape changed), so there is no DICOM header "
            "to derive a series from; save it as NIfTI instead."
        )
    out = Path(path)
    if meta["format"] == "dicom-series" and out.suffix.lower() == ".dcm":
        out = out.with_suffix("")  # a series is a folder of files
    try:
        return [str(write_like(array, meta, out, overwrite=True))]
    except ValueError as e:
        raise LayerWriteError(str(e)) from e
