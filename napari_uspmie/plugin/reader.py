"""napari reader: NIfTI files, DICOM files and DICOM series folders.

Pixels and geometry come from :func:`napari_uspmie.io.readers.read_image` (the same reader as
the command line and the bundle); the geometry becomes the layer's ``scale``, ``translate``
and ``affine`` (:mod:`napari_uspmie.plugin.geometry`), and the reader's whole metadata, headers
included (``nifti_header``, ``dicom_datasets``), becomes the layer's ``metadata``, from
which the plugin's writers write the layer back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from napari_uspmie.plugin.geometry import napari_geometry

__all__ = ["napari_get_reader", "read_layers", "layer_data_tuple"]

PathLike = str | os.PathLike
_FORMATS = ("nifti", "dicom", "dicom-series")
#: files looked at to decide whether a folder is a DICOM series (enough to skip stray files)
_FOLDER_PROBE = 32


def _readable(path: PathLike) -> bool:
    from napari_uspmie.io.dicom import is_dicom_file
    from napari_uspmie.io.readers import detect_format

    p = Path(path)
    if p.is_dir():
        files = (f for f in sorted(p.iterdir()) if f.is_file())
        return any(is_dicom_file(f) for f in islice(files, _FOLDER_PROBE))
    return p.is_file() and detect_format(p) in _FORMATS


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """Return :func:`read_layers` when every path is a NIfTI file, a DICOM file or a folder
    holding DICOM files; ``None`` otherwise (napari then asks another reader)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_readable(p) for p in paths):
        return None
    return read_layers


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".ima"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def layer_data_tuple(path: PathLike) -> tuple[Any, dict, str]:
    """Read one file or series folder into a napari ``(data, kwargs, "image")`` tuple.

    Raises:
        napari_uspmie.errors.ImageReadError: the file or folder cannot be read (napari shows
            the message, which names the file and the problem).
    """
    from napari_uspmie.io.readers import read_image

    path = Path(path)
    array, meta = read_image(path)
    rgb = meta.get("channel_axis") == -1 and array.shape[-1] in (3, 4)
    spatial_ndim = array.ndim - (1 if rgb else 0)
    kwargs = {"name": _layer_name(path), "metadata": meta, "rgb": rgb}
    if spatial_ndim in (2, 3):
        kwargs.update(napari_geometry(meta, spatial_ndim))
    if not rgb:
        lo, hi = meta.get("value_range") or (0.0, 0.0)
        if hi > lo:
            kwargs["contrast_limits"] = (float(lo), float(hi))
    return array, kwargs, "image"


def read_layers(path: PathLike | Sequence[PathLike]) -> list[tuple[Any, dict, str]]:
    """Read each path into a layer tuple (see :func:`layer_data_tuple`)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [layer_data_tuple(p) for p in paths]
