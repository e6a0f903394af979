"""Read clinical and ordinary image files into numpy arrays with their geometry.

``read_image(path)`` returns ``(array, meta)``.

Array layout (the convention of the whole package):
    - 2D grey: ``(H, W)``; 2D colour: ``(H, W, C)`` with C = 3 (RGB) or 4 (RGBA), 2 for grey+alpha;
    - volumes: ``(D, H, W)``, **slices first** (DICOM: sorted slices, rows, columns; NIfTI: the
      file's ``(i, j, k)`` array transposed to ``(k, j, i)``; multi-page TIFF: pages, rows, columns).

Metadata keys, always present:
    ``format``: ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"nifti"``, ``"dicom"`` (one file) or
    ``"dicom-series"`` (folder); ``source``: the path read; ``shape``; ``dtype`` (of the returned
    array); ``stored_dtype`` (of the file's pixels before rescaling); ``value_range`` (finite min,
    max); ``has_nonfinite``; ``channel_axis`` (``-1`` or ``None``); ``spatial_ndim``; ``spacing``
    (one entry per spatial array axis: mm for NIfTI and DICOM, 1.0 (one pixel) for plain images,
    whose DPI/resolution tags are kept as ``dpi``/``resolution`` for writing); ``affine``.

``affine`` is, for NIfTI and DICOM, a 4x4 matrix from the array index ``(k, i, j)`` (slice, row,
column) to world coordinates in **RAS** mm (as nibabel and MONAI; DICOM's LPS has x and y
negated); a 2D DICOM image is slice ``k = 0`` of that volume. ``origin`` (RAS position of the
first voxel) and ``direction`` (3x3, column ``n`` = RAS unit vector of array axis ``n``) come with
it. Plain images (PNG, JPEG, TIFF) have ``affine = None``; so have NIfTI and DICOM files whose
geometry is unusable (a singular or non-finite affine, zero or negative voxel sizes, no DICOM
PixelSpacing, a degenerate ImageOrientationPatient): ``geometry_problem`` says why (``None`` when
usable), a warning names the file, and their spacing is 1 per axis, as for plain pictures.

Format-specific keys: ``nifti_header`` (nibabel header, for writing) and ``qform_code``/``sform_code``;
``dicom_datasets`` (pydicom headers without pixels, in array order), ``dicom_files``,
``series_uid``, ``rescale`` (per slice ``(slope, intercept)``), ``skipped_files`` (non-DICOM files
in a series folder); ``mode`` (PIL mode), ``tiff_axes``, ``compression``, ``photometric``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from napari_uspmie.errors import ImageReadError
from napari_uspmie.io.dicom import is_dicom_file, read_dicom_file, read_dicom_series
from napari_uspmie.io.limits import check_declared_size, check_gzip_stream, check_openable

__all__ = [
    "REVERSE_AXES",
    "read_image",
    "detect_format",
    "IMAGE_SUFFIXES",
    "is_image_path",
    "nifti_volume_shape",
    "tiff_resolution",
]

#: suffix -> format for files; folders are DICOM series.
IMAGE_SUFFIXES = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
}

#: how each format's unusable geometry is corrected, for the warning that says it is taken as unknown
_GEOMETRY_FIX = {
    "nifti": "set a valid sform or voxel size (e.g. with nibabel's set_sform or set_zooms)",
    "dicom": "correct that element (e.g. with dcmodify)",
    "dicom-series": "correct that element in every slice (e.g. with dcmodify)",
}

#: affine factor reversing the order of three array axes, ``(i, j, k) <-> (k, j, i)``: NIfTI's and
#: MONAI's index order against the package's slices-first order; its own inverse
REVERSE_AXES = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def detect_format(path: str | os.PathLike) -> str | None:
    """Format of ``path`` from its first bytes (falling back to its suffix); ``None`` if unknown.

    Folders are ``"dicom-series"``.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom-series"
    try:
        with open(path, "rb") as f:
            head = f.read(348)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":  # first: DICOM preambles may mimic TIFF
        return "dicom"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    return IMAGE_SUFFIXES.get(_suffix(path))


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like something :func:`read_image` reads (by suffix or DICOM preamble)."""
    path = Path(path)
    return _suffix(path) in IMAGE_SUFFIXES or (path.is_file() and is_dicom_file(path))


def read_image(path: str | os.PathLike, *, series_uid: str | None = None) -> tuple[np.ndarray, dict]:
    """Read an image file or a DICOM series folder.

    Args:
        path: PNG/JPEG/TIFF/BMP, NIfTI (``.nii``/``.nii.gz``), a DICOM file, or a folder holding
            one DICOM series.
        series_uid: for a folder holding several series, the SeriesInstanceUID to read.

    Returns:
        ``(array, meta)``; see the module docstring for the layout and the keys.

    Raises:
        ImageReadError: missing, empty, truncated or unsupported file, 4D NIfTI, several DICOM
            series in one folder, ... The message names the file and the problem.
    """
    path = Path(path)
    if check_openable(path).st_size == 0 and path.is_file():
        raise ImageReadError(f"{path}: empty file (0 bytes); copy or export it again.")
    fmt = detect_format(path)
    if fmt is None:
        raise ImageReadError(
            f"{path}: not a supported image (PNG, JPEG, TIFF, BMP, NIfTI, DICOM file or DICOM series folder)."
        )
    if fmt == "dicom-series":
        array, meta = read_dicom_series(path, series_uid)
    elif fmt == "dicom":
        array, meta = read_dicom_file(path)
    elif fmt == "nifti":
        array, meta = _read_nifti(path)
    elif fmt == "tiff":
        array, meta = _read_tiff(path)
    else:
        array, meta = _read_pil(path, fmt)
    if array.dtype.byteorder == (">" if np.little_endian else "<"):  # big-endian NIfTI/TIFF/PNG data
        array = array.astype(array.dtype.newbyteorder("="))
    if meta.get("geometry_problem"):
        warnings.warn(
            f"{path}: {meta['geometry_problem']}; geometry taken as unknown: enhanced at the image's own pixels, "
            f"without resampling; {_GEOMETRY_FIX[meta['format']]} to enhance at the model's pixel size.",
            stacklevel=2,
        )
    return array, _complete(array, meta, path)


def _complete(array: np.ndarray, meta: dict, path: Path) -> dict:
    """Add the keys every format shares."""
    channels = bool(meta.pop("has_channels", False))
    spatial = array.ndim - (1 if channels else 0)
    finite = np.isfinite(array) if array.dtype.kind == "f" else None
    values = array[finite] if finite is not None else array
    meta.update(
        source=str(path),
        shape=tuple(array.shape),
        dtype=str(array.dtype),
        channel_axis=-1 if channels else None,
        spatial_ndim=spatial,
        has_nonfinite=bool(finite is not None and not finite.all()),
        value_range=(float(values.min()), float(values.max())) if values.size else (0.0, 0.0),
    )
    meta.setdefault("stored_dtype", str(array.dtype))
    meta.setdefault("spacing", (1.0,) * spatial)
    meta["spacing"] = tuple(float(s) for s in meta["spacing"])
    affine = meta.get("affine")
    if affine is not None:
        meta["origin"] = tuple(float(v) for v in affine[:3, 3])
        meta["direction"] = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0, keepdims=True)
    else:
        meta.setdefault("affine", None)
    return meta


def _not_pixdim_fix(record: logging.LogRecord) -> bool:
    """Log filter dropping nibabel's note that it replaced zero or negative pixdims: it names no file,
    and :func:`_nifti_geometry` says what that means for the image."""
    return not record.getMessage().startswith("pixdim[1,2,3]")


def _read_nifti(path: Path) -> tuple[np.ndarray, dict]:
    import nibabel as nib

    nibabel_log = logging.getLogger("nibabel.global")
    nibabel_log.addFilter(_not_pixdim_fix)
    try:
        img = nib.load(str(path))
        hdr = img.header
        _check_nifti_size(path, hdr)
        if path.name.lower().endswith(".gz"):
            # nibabel stops at the last voxel, before gzip's checksum: damaged data would pass unseen.
            # The verified bytes are parsed as they are: one decompression, not two.
            img = type(img).from_bytes(check_gzip_stream(path, keep=True))
        slope, inter = hdr.get_slope_inter()
        scaled = not (slope in (None, 1.0) and inter in (None, 0.0))
        data = np.asanyarray(img.dataobj)
        if scaled and data.dtype.kind != "f":
            data = data.astype(np.float32)
        affine, problem = _nifti_geometry(path, img)
    except ImageReadError:
        raise
    except Exception as e:  # nibabel, gzip and zlib raise assorted errors on broken files
        raise ImageReadError(f"{path}: unreadable NIfTI ({type(e).__name__}: {e}).") from e
    finally:
        nibabel_log.removeFilter(_not_pixdim_fix)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ImageReadError(
            f"{path}: {data.ndim}D NIfTI of shape {data.shape}; only 3D volumes (or 2D images) are supported. "
            "Split a 4D series into 3D volumes first."
        )
    if data.dtype.fields is not None:
        raise ImageReadError(f"{path}: NIfTI with structured voxels ({data.dtype}); only scalar voxels are supported.")
    if data.dtype.kind == "c":
        raise ImageReadError(
            f"{path}: complex voxels ({data.dtype}); enhance the magnitude image instead (e.g. abs() of the data)."
        )
    return np.ascontiguousarray(data.transpose(2, 1, 0)), {
        "format": "nifti",
        "affine": affine,
        "geometry_problem": problem,
        "spacing": (1.0,) * 3 if affine is None else tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)),
        "nifti_header": hdr.copy(),
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "stored_dtype": str(hdr.get_data_dtype()),
        "has_channels": False,
    }


def _nifti_geometry(path: Path, img) -> tuple[np.ndarray | None, str | None]:
    """nibabel's affine of ``img`` in the package's index order ``(k, i, j)``, or ``(None, why)``.

    Unusable: a singular or non-finite matrix, or voxel sizes stored as zero or negative, which
    nibabel silently makes 1 or positive (and tools that trust pixdim over the sform read nonsense).
    """
    from nibabel.openers import ImageOpener

    hdr = img.header
    source = "sform" if hdr["sform_code"] > 0 else ("qform" if hdr["qform_code"] > 0 else "voxel size (pixdim)")
    n = min(int(hdr["dim"][0]), 3)
    with ImageOpener(str(path)) as f:  # the header as stored, before nibabel's fixes
        stored = type(hdr).from_fileobj(f, check=False)["pixdim"][1 : 1 + n]
    if not np.all(stored > 0):  # NaN fails too
        fixed = _by(hdr["pixdim"][1 : 1 + n])
        return None, f"pixdim (voxel size) {_by(stored)} is not positive (the output's header gets {fixed})"
    if not np.isfinite(img.affine).all():
        return None, f"its {source} holds NaN or infinite values"
    singular = np.linalg.svd(img.affine[:3, :3], compute_uv=False)
    if singular[-1] <= 1e-6 * max(singular[0], 1e-30):  # a voxel axis of (almost) zero length in the world
        return None, f"its {source} is singular (voxel axes {_by(np.linalg.norm(img.affine[:3, :3], axis=0))} mm long)"
    return img.affine @ REVERSE_AXES, None


def _by(values) -> str:
    """``1 x 0.5 x 3``: sizes as the messages show them."""
    return " x ".join(f"{float(v):g}" for v in values)


def nifti_volume_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape :func:`read_image` will return for a NIfTI file, from its header alone (checked against
    the file's size and the memory budget, so a lying header costs nothing).

    Raises:
        ImageReadError: unreadable header, a header larger than the file or the budget, or not 2D/3D.
    """
    import nibabel as nib

    path = Path(path)
    check_openable(path)
    try:
        hdr = nib.load(str(path)).header
    except Exception as e:  # nibabel raises assorted errors on broken headers
        raise ImageReadError(f"{path}: unreadable NIfTI header ({type(e).__name__}: {e}).") from e
    _check_nifti_size(path, hdr)
    shape = tuple(int(v) for v in hdr.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ImageReadError(f"{path}: expected a 2D image or 3D volume, the header says shape {shape}.")
    return (1, shape[1], shape[0]) if len(shape) == 2 else shape[::-1]


def _check_nifti_size(path: Path, hdr) -> None:
    """Compare the voxels the header declares with the file (or, gzipped, its trailer) and the budget."""
    shape = tuple(int(v) for v in hdr.get_data_shape())
    dtype = hdr.get_data_dtype()
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    offset = int(hdr.get("vox_offset", 0)) if hasattr(hdr, "get") else 0
    size = path.stat().st_size
    stored = None
    if not path.name.lower().endswith(".gz"):
        stored = size - offset
    elif size >= 18:  # gzip's last 4 bytes: the uncompressed size modulo 2**32
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            tail = int.from_bytes(f.read(4), "little")
        if declared + offset < 2**32:
            stored = tail - offset
    what = f"{' x '.join(map(str, shape))} {dtype} voxels"
    if not shape or 0 in shape:
        raise ImageReadError(f"{path}: the header declares {what}: an image without voxels; re-export the file.")
    check_declared_size(path, declared, stored, what)


def _read_pil(path: Path, fmt: str) -> tuple[np.ndarray, dict]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # decode now so that truncated files fail here
            mode = img.mode
            info = dict(img.info)
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in info else "RGB")
            elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("L" if mode == "1" else "RGB")
            array = np.array(img)
        if mode == "P" and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
            array = np.ascontiguousarray(array[..., [0, 3]] if array.shape[-1] == 4 else array[..., 0])  # grey palette
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on broken files
        raise ImageReadError(f"{path}: unreadable {fmt.upper()} image ({type(e).__name__}: {e}).") from e
    meta = {"format": fmt, "mode": mode, "has_channels": array.ndim == 3, "stored_dtype": str(array.dtype)}
    if info.get("dpi"):  # kept for writing; the spacing of plain pictures stays one pixel
        meta["dpi"] = tuple(float(v) for v in info["dpi"])
    if "exif" in info:
        meta["exif"] = info["exif"]
    return array, meta


def tiff_resolution(page) -> tuple | None:
    """``(x_resolution, y_resolution, unit)`` of the first page, kept so that the writer can copy it."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    return tuple(tags["XResolution"].value), tuple(tags["YResolution"].value), unit


def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            meta = {
                "format": "tiff",
                "tiff_axes": axes,
                "photometric": page.photometric.name,
                "compression": int(page.compression),
                "stored_dtype": str(array.dtype),
            }
            resolution = tiff_resolution(page)
    except Exception as e:  # tifffile raises TiffFileError, ValueError, ... on broken files
        raise ImageReadError(f"{path}: unreadable TIFF ({type(e).__name__}: {e}).") from e
    # drop singleton axes, put samples (colour) last, keep at most one extra (slice) axis
    keep = [i for i, a in enumerate(axes) if array.shape[i] > 1 or a in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    extra = [a for a in axes if a not in "YXS"]
    if len(extra) > 1 or axes.replace("S", "")[-2:] != "YX":
        raise ImageReadError(f"{path}: TIFF with axes {series.axes!r}; only 2D images and single stacks are supported.")
    meta["has_channels"] = axes.endswith("S")
    if resolution:
        meta["resolution"] = resolution
    return np.ascontiguousarray(array), meta
