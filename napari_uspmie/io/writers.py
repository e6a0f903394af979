"""Write an array "like" the file it came from: same format, geometry and pixel representation.

``write_like(array, meta, out_path)`` takes the ``meta`` of :func:`napari_uspmie.io.readers.read_image`
(or just its ``format`` and ``source``: the headers are then read again from the source) and
an array of the same shape in the same layout (slices first, colour last):

- NIfTI -> NIfTI with the source header: identical qform/sform (codes and parameters), shape and
  on-disk data type (new scaling only when the source was scaled);
- DICOM series folder -> a derived series folder: same patient, study and geometry tags, new
  SeriesInstanceUID and SOPInstanceUIDs, ImageType DERIVED, SeriesDescription marked enhanced,
  values converted back to stored pixels through each slice's RescaleSlope/Intercept; one DICOM
  file -> one derived file (explicit VR little endian, uncompressed);
- PNG/JPEG/BMP/TIFF -> the same format, size, channels and bit depth (palette images come back
  as RGB).

Every output goes to a hidden temporary name in the target folder and is renamed when complete,
so an interrupted run never leaves a half-written file under the final name. Sources are only
read.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from napari_uspmie.errors import ImageWriteError
from napari_uspmie.io.atomic import split_ext, staged_output
from napari_uspmie.io.values import cast_like

__all__ = ["write_like", "enhanced_path", "check_output_dir"]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP"}


def enhanced_path(source: str | os.PathLike, output_dir: str | os.PathLike, suffix: str = "_enhanced") -> Path:
    """Output path for ``source``: ``<stem><suffix><ext>`` for files, ``<folder><suffix>/`` for series folders."""
    source = Path(source)
    if source.is_dir():
        return Path(output_dir) / f"{source.name}{suffix}"
    stem, ext = split_ext(source.name)
    return Path(output_dir) / f"{stem}{suffix}{ext}"


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and make sure files can be written there (before any work starts).

    Raises:
        ImageWriteError: the folder cannot be created or written to.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ImageWriteError(f"{out}: output folder is not writable: it is a file; choose a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ImageWriteError(f"{out}: output folder is not writable ({e.strerror or e}).") from e
    return out


def write_like(array: np.ndarray, meta: dict, out_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``array`` to ``out_path`` in the format and geometry of ``meta["source"]``.

    Args:
        array: image in the reader's layout and shape (values in the source's units, e.g. HU).
        meta: the reader's metadata (``format`` and ``source`` at least).
        out_path: output file, or output folder for a DICOM series.
        overwrite: replace an existing output (never an input; a folder only if it holds
            nothing but an earlier output of the package).

    Returns:
        The path written.

    Raises:
        ImageWriteError: shape mismatch, output equal to (or inside) the source, an existing output
            without ``overwrite``, unwritable target.
    """
    out_path = Path(out_path)
    fmt, source = meta.get("format"), Path(meta.get("source", ""))
    array = np.asarray(array)
    if "shape" in meta and tuple(array.shape) != tuple(meta["shape"]):
        expected = tuple(meta["shape"])
        raise ImageWriteError(f"{out_path}: array shape {array.shape} differs from the source's {expected}.")
    src = source.resolve()
    dst = out_path.resolve()
    if dst == src or (src.is_dir() and src in dst.parents):
        raise ImageWriteError(f"{out_path}: refusing to write over or into the input {source}.")
    if not out_path.parent.is_dir():
        raise ImageWriteError(f"{out_path}: output folder {out_path.parent} does not exist.")
    try:
        if fmt == "nifti":
            _write_nifti(array, meta, out_path, overwrite)
        elif fmt in ("dicom", "dicom-series"):
            from napari_uspmie.io.dicom_writer import write_derived_dicom

            write_derived_dicom(array, meta, out_path, overwrite=overwrite)
        elif fmt == "tiff":
            _write_tiff(array, meta, out_path, overwrite)
        elif fmt in _PIL_FORMATS:
            _write_pil(array, meta, out_path, overwrite)
        else:
            raise ImageWriteError(f"{out_path}: cannot write format {fmt!r}.")
    except OSError as e:
        raise ImageWriteError(f"{out_path}: write failed ({e.strerror or e}).") from e
    return out_path


def _write_nifti(array: np.ndarray, meta: dict, out_path: Path, overwrite: bool) -> None:
    import nibabel as nib

    header = meta.get("nifti_header")
    if header is None:
        header = nib.load(meta["source"]).header
    header = header.copy()
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    data = array.transpose(2, 1, 0).reshape(header.get_data_shape())
    slope, inter = header.get_slope_inter()
    if slope in (None, 1.0) and inter in (None, 0.0):
        data = cast_like(data, header.get_data_dtype())
    # no affine: the image takes the header's qform/sform unchanged (parameters and codes)
    img = cls(data, None, header=header)
    with staged_output(out_path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))


def _fill_from_source(meta: dict) -> dict:
    """Add the header details a reader's meta would carry (DPI, EXIF, compression, resolution) when
    only ``format`` and ``source`` were passed; reads the source's header only."""
    meta = dict(meta)
    source = Path(meta.get("source", ""))
    if not source.is_file() or "compression" in meta or "mode" in meta:
        return meta
    if meta["format"] == "tiff":
        import tifffile

        from napari_uspmie.io.readers import tiff_resolution

        with tifffile.TiffFile(source) as tif:
            meta["compression"] = int(tif.pages[0].compression)
            meta["resolution"] = tiff_resolution(tif.pages[0])
    else:
        from PIL import Image

        with Image.open(source) as img:
            meta["mode"] = img.mode
            if img.info.get("dpi"):
                meta["dpi"] = tuple(float(v) for v in img.info["dpi"])
            if img.info.get("exif"):
                meta["exif"] = img.info["exif"]
    return meta


def _write_pil(array: np.ndarray, meta: dict, out_path: Path, overwrite: bool) -> None:
    from PIL import Image

    meta = _fill_from_source(meta)
    dtype = np.dtype(meta.get("dtype", array.dtype))
    img = Image.fromarray(cast_like(array, dtype if dtype.kind in "iu" else np.uint8))
    fmt = _PIL_FORMATS[meta["format"]]
    kwargs: dict = {}
    if meta.get("dpi"):
        kwargs["dpi"] = meta["dpi"]
    if fmt == "JPEG":
        kwargs["quality"] = 95
        if meta.get("exif"):
            kwargs["exif"] = meta["exif"]
    with staged_output(out_path, overwrite=overwrite) as tmp:
        img.save(tmp, format=fmt, **kwargs)


def _write_tiff(array: np.ndarray, meta: dict, out_path: Path, overwrite: bool) -> None:
    import tifffile

    meta = _fill_from_source(meta)
    data = cast_like(array, meta.get("dtype", array.dtype))
    rgb = meta.get("channel_axis") is not None and data.shape[-1] in (3, 4)
    kwargs: dict = {"photometric": "rgb" if rgb else "minisblack"}
    if meta.get("channel_axis") is not None and not rgb:
        kwargs["planarconfig"] = "contig"
    if meta.get("resolution"):
        x, y, unit = meta["resolution"]
        kwargs["resolution"] = (x[0] / x[1], y[0] / y[1])
        kwargs["resolutionunit"] = unit
    compression = meta.get("compression", 1)
    with staged_output(out_path, overwrite=overwrite) as tmp:
        try:
            tifffile.imwrite(tmp, data, compression=compression if compression != 1 else None, **kwargs)
        except Exception:  # the source's codec may need imagecodecs for encoding: store uncompressed
            tifffile.imwrite(tmp, data, **kwargs)
