"""DICOM input: series discovery, slice sorting, geometry and Hounsfield-style rescaling.

A DICOM *series folder* is a folder whose files hold slices of one series. The files are
grouped by ``SeriesInstanceUID``, sorted by their position along the slice normal
(``ImagePositionPatient`` projected on ``cross(row direction, column direction)``) and
stacked slices first: the volume is ``(D, H, W)`` = (slice, row, column).

Geometry is returned as a 4x4 affine from the array index ``(k, i, j)`` to patient
coordinates in **RAS** millimetres (DICOM's LPS with x and y negated), the convention of
NIfTI, nibabel and MONAI; ``None`` (with ``meta["geometry_problem"]`` saying why) when the pixel
spacing or the orientation is unusable. Series with a cut, missing or odd slice are refused
(:mod:`napari_uspmie.io.series_checks`). Works with pydicom 2 and 3.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_uspmie.errors import ImageReadError
from napari_uspmie.io.series_checks import check_members_readable, check_no_gaps, check_stackable, is_damaged_image

__all__ = [
    "LPS_TO_RAS",
    "is_dicom_file",
    "find_series",
    "read_dicom_header",
    "read_dicom_file",
    "read_dicom_series",
    "read_series_headers",
    "dicom_affine",
    "UNIT_TOLERANCE",
]

#: flips x and y: DICOM patient coordinates (LPS) <-> RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: largest departure of ImageOrientationPatient's vectors from unit length and perpendicularity
#: (scanners write them rounded to a few decimals)
UNIT_TOLERANCE = 1e-3


def _pydicom():
    import pydicom

    return pydicom


def is_dicom_file(path: str | os.PathLike) -> bool:
    """``True`` when ``path`` is a regular file starting with the DICOM preamble (``DICM`` at byte 128)."""
    if not Path(path).is_file():  # never open a FIFO or device: it could block or never end
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom_header(path: Path):
    """Header of one file without pixel data; ``None`` when it is not DICOM at all."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        return None
    except Exception as e:  # truncated or corrupt header: name the file
        raise ImageReadError(f"{path}: unreadable DICOM header ({type(e).__name__}: {e}).") from e


def find_series(folder: str | os.PathLike) -> tuple[dict[str, list], list[str]]:
    """Group the DICOM image files directly inside ``folder`` (not its subfolders) by ``SeriesInstanceUID``.

    Returns:
        ``(series, skipped)``: ``series`` maps each SeriesInstanceUID to a list of
        ``(path, header)`` pairs (headers read without pixel data), ``skipped`` names the
        files that are not DICOM images (other files, DICOMDIR, reports, files cut short).

    Raises:
        ImageReadError: a file claims to be DICOM but its header is corrupt.
    """
    series, skipped, _ = _scan(Path(folder))
    return series, skipped


def _scan(folder: Path) -> tuple[dict[str, list], list[str], list[tuple[str, str | None]]]:
    """:func:`find_series`, and the skipped image files cut short or damaged as ``(name, SeriesInstanceUID)``."""
    series: dict[str, list] = {}
    skipped: list[str] = []
    damaged: list[tuple[str, str | None]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        ds = read_dicom_header(path)
        if ds is None or "Rows" not in ds:  # DICOMDIR, reports, presentation states: no image
            skipped.append(str(path))
            if ds is not None and is_damaged_image(ds):
                damaged.append((path.name, str(ds.SeriesInstanceUID) if "SeriesInstanceUID" in ds else None))
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), []).append((path, ds))
    return series, skipped, damaged


def _numbers(ds, keyword: str) -> list[float] | None:
    """The values of a numeric text element (DS, IS) as floats; ``None`` when absent or empty.

    Raises:
        ImageReadError: a value is not a finite number (``PixelSpacing`` ``"abc"``, ``SliceThickness``
            ``"x"``): the message names the file and the element.
    """
    value = ds.get(keyword)
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    if value is None or all(str(v).strip() == "" for v in items):
        return None
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        numbers = [math.nan]
    if not all(math.isfinite(n) for n in numbers):
        text = "\\".join(str(v) for v in items)
        raise ImageReadError(
            f"{getattr(ds, 'filename', None) or 'DICOM header'}: {keyword} is '{text}', not a number; "
            "correct or remove that element (e.g. with dcmodify) and try again."
        )
    return numbers


def _number(ds, keyword: str) -> float | None:
    """The first value of a numeric text element, ``None`` when absent (see :func:`_numbers`)."""
    values = _numbers(ds, keyword)
    return values[0] if values else None


def _orientation(ds) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
    """Row direction (increasing column index) and column direction (increasing row index), LPS.

    Returns:
        ``((row, column), None)``, the axes of the array when the element is absent, or
        ``(None, why)`` when it is not two perpendicular unit vectors (within :data:`UNIT_TOLERANCE`).
    """
    iop = _numbers(ds, "ImageOrientationPatient")
    if iop is None:
        return (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])), None
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    unit = len(iop) == 6 and all(abs(np.linalg.norm(v) - 1.0) <= UNIT_TOLERANCE for v in (row, col))
    if not unit or abs(float(np.dot(row, col))) > UNIT_TOLERANCE:
        text = "\\".join(f"{v:g}" for v in iop)
        return None, f"ImageOrientationPatient is '{text}', not two perpendicular unit vectors"
    return (row / np.linalg.norm(row), col / np.linalg.norm(col)), None


def _pixel_spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    """(row spacing, column spacing) in mm from PixelSpacing, else ImagerPixelSpacing.

    Returns:
        ``((row, column), None)``, or ``(None, why)`` when absent or not two positive numbers.
    """
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        ps = _numbers(ds, tag)
        if ps is not None and len(ps) == 2 and min(ps) > 0:
            return (ps[0], ps[1]), None
        if ps is not None:
            text = "\\".join(f"{v:g}" for v in ps)
            return None, f"{tag} is '{text}', not two positive numbers"
    return None, "no PixelSpacing"


def _position(ds) -> np.ndarray | None:
    ipp = _numbers(ds, "ImagePositionPatient")
    return None if ipp is None or len(ipp) != 3 else np.asarray(ipp)


def dicom_affine(headers: Sequence) -> tuple[np.ndarray | None, tuple[float, ...], bool]:
    """Affine of slices already sorted along the normal.

    Args:
        headers: pydicom datasets of the slices in array order.

    Returns:
        ``(affine, spacing, uniform)``: the RAS 4x4 affine of index ``(k, i, j)`` (``None`` when
        the first header's orientation or pixel spacing is unusable), the spacing ``(slice, row,
        column)`` in mm (1 where unknown) and whether the slice spacing is uniform (within 1%).
    """
    first = headers[0]
    directions, _ = _orientation(first)
    pixel, _ = _pixel_spacing(first)
    row_dir, col_dir = directions or (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    dr, dc = pixel or (1.0, 1.0)
    normal = np.cross(row_dir, col_dir)
    p0 = _position(first)
    p_last = _position(headers[-1])
    uniform = True
    if len(headers) > 1 and p0 is not None and p_last is not None:
        # the real stacking vector, which differs from the normal for tilted gantries
        step = (p_last - p0) / (len(headers) - 1)
        gaps = np.diff([float(np.dot(_position(h), normal)) for h in headers])
        uniform = bool(np.all(np.abs(gaps - gaps.mean()) <= 0.01 * abs(gaps.mean()) + 1e-4))
    else:
        thickness = _number(first, "SpacingBetweenSlices") or _number(first, "SliceThickness") or 1.0
        step = normal * thickness
    origin = p0 if p0 is not None else np.zeros(3)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = step, col_dir * dr, row_dir * dc, origin
    spacing = (float(np.linalg.norm(step)), dr, dc)
    return (LPS_TO_RAS @ lps if directions and pixel else None), spacing, uniform


def _sort_slices(items: list) -> list:
    """Sort ``(path, header)`` pairs (of a usable orientation) by position along the normal, else InstanceNumber."""
    row_dir, col_dir = _orientation(items[0][1])[0]
    normal = np.cross(row_dir, col_dir)

    def key(item):
        ds = item[1]
        pos = _position(ds)
        inst = _number(ds, "InstanceNumber") or 0.0
        return (float(np.dot(pos, normal)) if pos is not None else inst, inst)

    items = sorted(items, key=key)
    keys = [key(it)[0] for it in items]
    if len(items) > 1 and np.min(np.diff(keys)) < 1e-4 and all(_position(ds) is not None for _, ds in items):
        dup = int(np.sum(np.diff(keys) < 1e-4))
        raise ImageReadError(
            f"{items[0][0].parent}: {dup} image(s) share a slice position with another; the series holds "
            "several echoes, phases or time points, which cannot be stacked into one volume."
        )
    if _position(items[0][1]) is not None:
        check_no_gaps(items[0][0].parent, [p.name for p, _ in items], keys)
    return items


def _decode(path: Path):
    """Full dataset with decoded pixels; errors name the file."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # truncated files raise EOFError, ValueError, ...
        raise ImageReadError(f"{path}: unreadable DICOM file ({type(e).__name__}: {e}).") from e
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for truncated or unsupported compressed data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = ""
        if syntax is not None and not syntax.is_transfer_syntax:  # ``is_compressed`` would raise
            hint = f" Its transfer syntax {syntax} is not a DICOM transfer syntax: the file is damaged or non-standard."
        elif syntax is not None and syntax.is_compressed:
            hint = f" The transfer syntax is {syntax.name}; installing pylibjpeg and its plugins may help."
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e}).{hint}") from e
    return ds, pixels


def _rescale(stack: list[np.ndarray], headers: Sequence, rgb: bool) -> tuple[np.ndarray, list]:
    """Apply RescaleSlope/Intercept per slice; integer results stay integer (int16 if it fits)."""
    params = [(_number(h, "RescaleSlope") or 1.0, _number(h, "RescaleIntercept") or 0.0) for h in headers]
    raw = np.stack(stack)
    if rgb or all(s == 1.0 and b == 0.0 for s, b in params):
        return raw, params
    if all(s == 1.0 and b.is_integer() for s, b in params):
        out = raw.astype(np.int64) + np.asarray([b for _, b in params], np.int64).reshape(-1, *[1] * (raw.ndim - 1))
        lo, hi = out.min(), out.max()
        dtype = np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32
        return out.astype(dtype), params
    slopes = np.asarray([s for s, _ in params], np.float64).reshape(-1, *[1] * (raw.ndim - 1))
    inters = np.asarray([b for _, b in params], np.float64).reshape(-1, *[1] * (raw.ndim - 1))
    return (raw * slopes + inters).astype(np.float32), params


def _common_meta(headers: Sequence, files: Sequence[Path], stored_dtype, params) -> dict:
    first = headers[0]
    return {
        "dicom_datasets": list(headers),
        "dicom_files": [str(f) for f in files],
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "stored_dtype": str(stored_dtype),
        "rescale": params,
        "photometric": str(first.get("PhotometricInterpretation", "")),
        "modality": str(first.get("Modality", "")),
        "has_channels": int(first.get("SamplesPerPixel", 1)) > 1,
    }


def read_dicom_file(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read one DICOM file: ``(H, W)``, ``(H, W, 3)`` or, for multi-frame files, ``(F, H, W[, 3])``.

    Raises:
        ImageReadError: not DICOM, no pixel data, or undecodable pixels.
    """
    path = Path(path)
    header = read_dicom_header(path)
    if header is None:
        raise ImageReadError(f"{path}: not a DICOM file (no DICOM header); give a DICOM image or rename the file.")
    if "Rows" not in header:
        raise ImageReadError(
            f"{path}: DICOM file without pixel data (modality {header.get('Modality', '?')}): a report, a "
            "presentation state, a DICOMDIR or a file cut short; give a DICOM image."
        )
    _, pixels = _decode(path)
    rgb = int(header.get("SamplesPerPixel", 1)) > 1
    frames = int(_number(header, "NumberOfFrames") or 1)
    stack = list(pixels) if frames > 1 else [pixels]
    array, params = _rescale(stack, [header] * len(stack), rgb)
    affine, spacing, _ = dicom_affine([header])
    meta = _common_meta([header], [path], pixels.dtype, params)
    if frames == 1:
        array = array[0]
        meta["spacing"] = spacing[1:]
    else:
        meta["spacing"] = spacing
        meta["number_of_frames"] = frames
    meta.update(format="dicom", affine=affine, geometry_problem=_geometry_problem(header))
    return array, meta


def _geometry_problem(ds) -> str | None:
    """Why the header's geometry is unusable (the affine is then ``None``); ``None`` when usable."""
    return _orientation(ds)[1] or _pixel_spacing(ds)[1]


def read_series_headers(folder: str | os.PathLike, series_uid: str | None = None) -> tuple[list, list[str]]:
    """Sorted ``(path, header)`` pairs of the one series in ``folder`` and the skipped files.

    Raises:
        ImageReadError: no DICOM images, several series without ``series_uid``, an image file cut
            short, slices of different sizes or orientations, duplicate positions or a gap.
    """
    folder = Path(folder)
    series, skipped, damaged = _scan(folder)
    if series_uid is not None:
        if series_uid not in series:
            raise ImageReadError(f"{folder}: no series with SeriesInstanceUID {series_uid}.")
        series = {series_uid: series[series_uid]}
    if not series:
        raise ImageReadError(f"{folder}: no DICOM image files in this folder.")
    if len(series) > 1:
        desc = "; ".join(
            f"{uid} ({len(items)} files, {items[0][1].get('SeriesDescription', 'no description')})"
            for uid, items in series.items()
        )
        raise ImageReadError(
            f"{folder}: holds {len(series)} DICOM series ({desc}); put each series in its own folder "
            "(from Python: pass series_uid)."
        )
    uid, items = next(iter(series.items()))
    check_members_readable(folder, [name for name, owner in damaged if owner in (None, uid)])
    check_stackable(
        folder,
        [p.name for p, _ in items],
        sizes=[(int(ds.Rows), int(ds.Columns)) for _, ds in items],
        orientations=[_numbers(ds, "ImageOrientationPatient") for _, ds in items],
        orientation_problem=_orientation(items[0][1])[1],
        placed=[_position(ds) is not None for _, ds in items],
    )
    return _sort_slices(items), skipped


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, dict]:
    """Read a DICOM series folder into a ``(D, H, W)`` (or ``(D, H, W, 3)``) volume.

    Args:
        folder: the folder holding the series' files (non-DICOM files are skipped and listed
            in ``meta["skipped_files"]``).
        series_uid: which series to read when the folder holds several.

    Returns:
        ``(volume, meta)``; values have RescaleSlope/Intercept applied (Hounsfield units for CT).

    Raises:
        ImageReadError: see :func:`read_series_headers`, plus unreadable pixels.
    """
    items, skipped = read_series_headers(folder, series_uid)
    files = [p for p, _ in items]
    headers = [ds for _, ds in items]  # read without pixel data: the pixels live in the array only
    try:
        pixels = [_decode(p)[1] for p in files]
    except ImageReadError as e:  # the file's own message, and what it means for the series
        raise ImageReadError(f"{e} It is a slice of {folder}: copy or export the whole series again.") from e
    shapes = {px.shape for px in pixels}
    if len(shapes) > 1:
        raise ImageReadError(f"{folder}: slices have different sizes {sorted(shapes)}.")
    rgb = int(headers[0].get("SamplesPerPixel", 1)) > 1
    stored_dtype = pixels[0].dtype
    array, params = _rescale(pixels, headers, rgb)
    del pixels
    affine, spacing, uniform = dicom_affine(headers)
    if not uniform:
        warnings.warn(f"{folder}: slice spacing is not uniform; the affine uses the mean spacing.", stacklevel=2)
    meta = _common_meta(headers, files, stored_dtype, params)
    meta.update(format="dicom-series", affine=affine, spacing=spacing, uniform_spacing=uniform, skipped_files=skipped)
    meta["geometry_problem"] = _geometry_problem(headers[0])
    return array, meta
