"""Bad input battery for ``python -m napari_uspmie enhance`` (and ``lassim``): broken, odd and hostile inputs.

The command promises, for every bad input, one line naming the input and saying what is wrong (and
what to do), never a traceback; the other inputs of the run are still enhanced; inputs are never
modified; no temporary or half-written file is left in the output folder; an existing output is
kept unless ``--overwrite``; a run with failed inputs exits with 1, a run stopped before any work
(bad option, unusable output folder or report path) with 2.

One ``enhance`` process takes all the file inputs together with good ones (the model loads once),
beside a second one writing beside its inputs; what stops a run before any work (bad option values,
output folder, report path, device) runs in this process through the command's ``main``, and the
``lassim`` refusals as two short processes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from napari_uspmie.cli.main import main
from napari_uspmie.io.readers import read_image
from napari_uspmie.io.writers import enhanced_path
from tests.io_factories import MR_TRUNCATED, mni_slices, write_dicom_series

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs, sockets and link loops: POSIX")

#: every process of the battery ends well before this, or the test fails instead of hanging
TIMEOUT_S = 240

#: the package's temporary names: ``.<stem>.tmp-<8 hex>[ext]`` and ``.<name>.old-<8 hex>`` (io/atomic.py),
#: ``.write-test-<hex>`` (io/writers.py); anything hidden in an output folder is a leftover anyway
TEMPORARY = re.compile(r"^\.(.+\.tmp-[0-9a-f]{8}|.+\.old-[0-9a-f]{8}|write-test-[0-9a-f]+)")


@dataclass
class Case:
    """One kind of bad input given to the shared run, and the line the command must print for it.

    ``line`` says which: ``"error"`` (``error: <path>: <problem>``, nothing written), ``"warning"``
    (written, with ``warning: <path>: <problem>``) or ``"written"`` (written, and its ``<path> -> ...``
    line says ``problem``).
    """

    kind: str
    how: str
    path: Path
    problem: str  # regular expression the line must match after the input's name
    line: str = "error"


def _good_slice(n: int = 64) -> np.ndarray:
    """An ``n`` x ``n`` uint8 MR slice (the MNI template), inside the shipped model's scope."""
    return np.ascontiguousarray(mni_slices(1, 3)[0][8 : 8 + n, 1 : 1 + n])


def _encoded(array: np.ndarray, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _noise(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    """Random values: they do not compress, so a cut file really misses data."""
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, size=shape, dtype=dtype)


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), str(path))
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_png(side: int) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` grey pixels and one tiny IDAT: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _series(folder: Path, slices: int = 3, **options) -> list[Path]:
    """A small MR series (48 x 48 slices) written by the project's factory."""
    volume = _good_slice(48)[None].repeat(slices, 0).astype(np.int16)
    return write_dicom_series(folder, volume, modality="MR", intercept=0.0, **options)


def _dicom_slice(scratch: Path, name: str) -> pydicom.Dataset:
    """One MR slice of :func:`_series`, read back for editing."""
    (path,) = _series(scratch / name, 1)
    return pydicom.dcmread(path)


def _save_dicom(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _patch_text(ds: pydicom.Dataset, path: Path, keyword: str, value: str) -> Path:
    """Save ``ds`` with the text of a numeric (DS/IS) element replaced by ``value``, which pydicom refuses to write."""
    _save_dicom(ds, path)
    element = ds[keyword]
    data = path.read_bytes()
    at = data.index(struct.pack("<HH", element.tag.group, element.tag.elem) + element.VR.encode())
    (length,) = struct.unpack_from("<H", data, at + 6)  # explicit VR little endian: tag, VR, 2-byte length
    text = (value + " " * (len(value) % 2)).encode()
    path.write_bytes(data[: at + 6] + struct.pack("<H", len(text)) + text + data[at + 8 + length :])
    return path


def build_inputs(root: Path, scratch: Path, out: Path) -> tuple[list[Case], list[Path]]:
    """Write the inputs under ``root`` (helpers' files under ``scratch``, an earlier output in ``out``).

    Returns:
        ``(cases, goods)``: the bad inputs and the good ones, which must be enhanced.
    """
    cases: list[Case] = []

    def case(kind: str, how: str, path: Path, problem: str, line: str = "error") -> Path:
        cases.append(Case(kind, how, path, problem, line))
        return path

    good = _good_slice()
    (root / "good.png").write_bytes(_encoded(good))
    tifffile.imwrite(root / "grey16.tif", good.astype(np.uint16) * 257, photometric="minisblack")
    (root / "dup_a").mkdir()
    (root / "dup_a" / "same.png").write_bytes(_encoded(good))
    goods = [root / "good.png", root / "grey16.tif", root / "dup_a" / "same.png"]

    # --- empty, missing, not what the name says ---------------------------------------------------
    for name in ("empty.png", "empty.nii.gz", "zero_bytes.dcm"):
        case(f"empty file ({name.split('.', 1)[1]})", "0 bytes", root / name, r"empty file").write_bytes(b"")
    case("nonexistent path", "never created", root / "missing.nii.gz", r"no such file or folder")
    case("text file", "notes.txt", root / "notes.txt", r"not a supported image").write_text("hello\n")
    case("text named .png", "plain text", root / "text.png", r"unreadable PNG").write_text("hello\n")
    case("text named .dcm", "plain text", root / "text.dcm", r"not a DICOM file").write_text("hello\n")
    case("PNG bytes named .nii", "a valid PNG", root / "picture.nii", r"holds a PNG image.*\.nii.*rename")
    (root / "picture.nii").write_bytes(_encoded(good))
    case("JPEG bytes named .png", "a valid JPEG", root / "photo.png", r"holds a JPEG image.*\.png.*rename")
    (root / "photo.png").write_bytes(_encoded(good, "JPEG"))

    # --- cut or damaged files ---------------------------------------------------------------------
    noisy = _encoded(_noise((64, 64)))
    case("truncated PNG", "noise PNG cut at 60 %", root / "cut.png", r"unreadable PNG.*truncated")
    (root / "cut.png").write_bytes(noisy[: len(noisy) * 6 // 10])
    flipped = bytearray(noisy)
    flipped[len(noisy) // 2] ^= 0xFF
    case("PNG with a damaged byte", "one IDAT byte flipped", root / "bad_crc.png", r"unreadable PNG")
    (root / "bad_crc.png").write_bytes(bytes(flipped))
    jpeg = _encoded(_noise((64, 64), seed=1), "JPEG", quality=95)
    case("truncated JPEG", "noise JPEG cut at 50 %", root / "cut.jpg", r"unreadable JPEG.*truncated")
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bmp = _encoded(_noise((64, 64), seed=2), "BMP")
    case("truncated BMP", "BMP cut at 50 %", root / "cut.bmp", r"unreadable BMP.*truncated")
    (root / "cut.bmp").write_bytes(bmp[: len(bmp) // 2])
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _noise((64, 64), np.uint16), photometric="minisblack")
    tif = buffer.getvalue()
    case("truncated TIFF", "uint16 TIFF cut at 60 %", root / "cut.tif", r"unreadable TIFF")
    (root / "cut.tif").write_bytes(tif[: len(tif) * 6 // 10])
    case("TIFF cut in its header", "first 16 bytes", root / "stub.tif", r"unreadable TIFF")
    (root / "stub.tif").write_bytes(tif[:16])

    volume = np.moveaxis(mni_slices(4, 3)[:, :48, :48], 0, -1).astype(np.int16)  # (x, y, z) = 48 x 48 x 4
    whole = _nifti(scratch / "whole.nii", volume).read_bytes()
    case("truncated .nii", "header intact, voxels cut", root / "cut.nii", r"truncated or corrupt: the header")
    (root / "cut.nii").write_bytes(whole[: 352 + (len(whole) - 352) // 2])
    noisy_gz = _nifti(scratch / "noisy.nii.gz", np.moveaxis(_noise((4, 48, 48), np.int16), 0, -1)).read_bytes()
    case("truncated .nii.gz", "gzip stream cut at 60 %", root / "cut.nii.gz", r"truncated or corrupt|file ended")
    (root / "cut.nii.gz").write_bytes(noisy_gz[: len(noisy_gz) * 6 // 10])
    damaged = bytearray(noisy_gz)
    for k in range(len(damaged) // 2, len(damaged) // 2 + 64):
        damaged[k] ^= 0x5A
    case(".nii.gz damaged mid-stream", "64 bytes flipped", root / "damaged.nii.gz", r"corrupt compressed data")
    (root / "damaged.nii.gz").write_bytes(bytes(damaged))
    case(".nii named .nii.gz", "not gzipped", root / "plain.nii.gz", r"unreadable NIfTI.*not a gzip")
    (root / "plain.nii.gz").write_bytes(whole)
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    case("NIfTI header claiming 16 GB", "2000^3 int16, 4 kB file", root / "enormous.nii", r"declares 2000 x 2000")
    (root / "enormous.nii").write_bytes(header.binaryblock + b"\x00" * 4096)
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    case("gzipped header claiming 238 GiB", "4000^3 float32, 1 kB", root / "enormous.nii.gz", r"memory budget")
    (root / "enormous.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\x00" * 4100))
    bad_dims = bytearray(whole)
    struct.pack_into("<h", bad_dims, 40, 9)  # dim[0] = 9 dimensions; NIfTI allows up to 7
    case("NIfTI with dim[0] = 9", "header field patched", root / "bad_dims.nii", r"unreadable NIfTI")
    (root / "bad_dims.nii").write_bytes(bytes(bad_dims))

    # --- values and shapes the model cannot take --------------------------------------------------
    nan = volume.astype(np.float32)
    nan[10:20, 10:20, 1] = np.nan
    nan[0, 0, 0] = np.inf
    case("NIfTI with NaN and inf", "float32 volume", _nifti(root / "nan.nii.gz", nan), r"NaN/Inf values; replace")
    complex_volume = volume.astype(np.complex64)
    case("complex NIfTI", "complex64", _nifti(root / "complex.nii.gz", complex_volume), r"complex voxels")
    four = np.stack([volume] * 2, -1)
    case("4D NIfTI", "48x48x4x2", _nifti(root / "4d.nii.gz", four), r"4D NIfTI.*Split")
    five = np.stack([volume[..., None]] * 2, -1)
    case("5D NIfTI", "48x48x4x1x2", _nifti(root / "5d.nii.gz", five), r"5D NIfTI")
    empty_volume = np.zeros((48, 48, 0), np.int16)
    case("NIfTI without voxels", "48x48x0", _nifti(root / "no_slices.nii.gz", empty_volume), r"without voxels")
    bomb = case("PNG claiming 100000^2 pixels", "IHDR only, 81 bytes", root / "bomb.png", r"DecompressionBomb")
    bomb.write_bytes(_huge_png(100_000))
    # PIL warns (a line naming no file) between 89 and 179 Mpixels, then fails on the missing data
    claim = case("PNG claiming 12000^2 pixels", "IHDR only, 81 bytes", root / "big_claim.png", r"truncated")
    claim.write_bytes(_huge_png(12_000))
    float_nan = good.astype(np.float32)
    float_nan[5:9, 5:9] = np.nan
    case("float TIFF with NaN", "float32, 16 NaN", root / "float_nan.tif", r"16 NaN/Inf values")
    tifffile.imwrite(root / "float_nan.tif", float_nan, photometric="minisblack")
    huge = case("float64 TIFF, values 1e300", "finite, beyond float32", root / "huge.tif", r"beyond the float32 range")
    tifffile.imwrite(huge, good.astype(np.float64) * 1e300, photometric="minisblack")
    case("5D TIFF", "TZCYX 2x2x3x32x32", root / "5d.tif", r"TIFF with axes 'TZCYX'")
    tifffile.imwrite(
        root / "5d.tif", np.zeros((2, 2, 3, 32, 32), np.uint8), photometric="minisblack", metadata={"axes": "TZCYX"}
    )
    rgba = np.dstack([good, good, good, np.full_like(good, 128)])
    case("RGBA PNG with alpha", "grey as RGB, alpha 128", root / "rgba.png", r"scope: a colour .*allow-out-of-scope")
    (root / "rgba.png").write_bytes(_encoded(rgba))
    case("palette PNG", "16 colours, mode P", root / "palette.png", r"scope: a colour")
    colours = np.dstack([good, good[::-1], good[:, ::-1]])
    Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(root / "palette.png")

    # Images too small for the structure check: written under the default policy (warn), flagged as not
    # checked, never reported as kept.
    tiny = r"structure NOT CHECKED: slices of \d+ x \d+ pixels are smaller than the 13 x 13"
    case("1x1 PNG", "one pixel", root / "one_pixel.png", tiny, "warning").write_bytes(_encoded(good[:1, :1]))
    case("2x2 PNG", "four pixels", root / "two_by_two.png", tiny, "warning").write_bytes(_encoded(good[:2, :2]))
    case("1x64 PNG", "one row", root / "strip.png", tiny, "warning").write_bytes(_encoded(good[:1]))
    voxel = np.ones((1, 1, 1), np.int16)
    case("1-voxel NIfTI", "1x1x1", _nifti(root / "voxel.nii.gz", voxel), tiny, "warning")
    case("NIfTI, 3-voxel first axis", "3x48x4", _nifti(root / "thin3.nii.gz", volume[:3].copy()), tiny, "warning")
    thin4 = volume[:4, :, :4].copy()
    case("NIfTI, 4-voxel first axis", "4x48x4", _nifti(root / "thin4.nii.gz", thin4), tiny, "warning")

    # --- DICOM ------------------------------------------------------------------------------------
    ds = _dicom_slice(scratch, "nopix")
    del ds.PixelData
    case("DICOM without pixel data", "PixelData removed", _save_dicom(ds, root / "no_pixels.dcm"), r"no pixel data")
    ds = _dicom_slice(scratch, "report")
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    report = _save_dicom(ds, root / "report.dcm")
    case(
        "DICOM that is no image", "Rows, Columns, PixelData removed", report, r"without pixel data.*give a DICOM image"
    )
    ds = _dicom_slice(scratch, "rows")
    ds.Rows = ds.Columns = 4096
    rows = _save_dicom(ds, root / "rows_lie.dcm")
    case("DICOM with Rows/Columns lying", "4096x4096 for 48x48 pixels", rows, r"less than expected")
    ds = _dicom_slice(scratch, "bits")
    ds.BitsAllocated = 7
    case("DICOM with BitsAllocated 7", "tag changed", _save_dicom(ds, root / "bits7.dcm"), r"Bits Allocated")
    case("truncated DICOM", "pydicom's MR_truncated.dcm", root / "MR_truncated.dcm", r"cannot decode DICOM pixel")
    shutil.copyfile(MR_TRUNCATED, root / "MR_truncated.dcm")
    sound = _save_dicom(_dicom_slice(scratch, "cut"), scratch / "cut.dcm").read_bytes()
    case("DICOM cut in its header", "first 300 bytes", root / "cut_header.dcm", r"without pixel data.*cut short")
    (root / "cut_header.dcm").write_bytes(sound[:300])
    spacing = _patch_text(_dicom_slice(scratch, "spacing"), root / "spacing_abc.dcm", "PixelSpacing", "abc\\abc")
    case("DICOM with PixelSpacing 'abc'", "DS text patched", spacing, r"PixelSpacing is 'abc\\abc', not a number")
    ds = _dicom_slice(scratch, "thick")
    del ds.SpacingBetweenSlices, ds.ImagePositionPatient  # so that the slice thickness gives the geometry
    thick = _patch_text(ds, root / "thickness_x.dcm", "SliceThickness", "x")
    case("DICOM with SliceThickness 'x'", "DS text patched", thick, r"SliceThickness is 'x', not a number")
    slope = _patch_text(_dicom_slice(scratch, "slope"), root / "slope_abc.dcm", "RescaleSlope", "abc")
    case("DICOM with RescaleSlope 'abc'", "DS text patched", slope, r"RescaleSlope is 'abc', not a number")
    ds = _dicom_slice(scratch, "syntax")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])  # raw pixels where a JPEG 2000 stream belongs
    j2k = _save_dicom(ds, root / "jpeg2000.dcm")
    case("DICOM, JPEG 2000 syntax, no codec", "raw pixels encapsulated", j2k, r"JPEG 2000.*pylibjpeg")
    ds = _dicom_slice(scratch, "unknown_syntax")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    unknown = _save_dicom(ds, root / "unknown_syntax.dcm")
    case("DICOM, unknown transfer syntax", "TransferSyntaxUID 1.2.3.4.5.6.7", unknown, r"not a DICOM transfer syntax")

    mixed = root / "mixed_sizes"
    _series(mixed)
    ds = pydicom.dcmread(sorted(mixed.iterdir())[0])
    ds.Rows, ds.Columns = 32, 32
    ds.PixelData = np.zeros((32, 32), np.uint16).tobytes()
    ds.ImagePositionPatient = [0.0, 0.0, 999.0]
    _save_dicom(ds, mixed / "IM0099.dcm")
    case("DICOM series with mixed sizes", "one 32x32 slice among 48x48", mixed, r"different sizes")
    two = root / "two_series"
    _series(two, description="FIRST")
    for path in _series(scratch / "second", description="SECOND"):
        shutil.copyfile(path, two / f"B{path.name}")
    case("DICOM folder with two series", "two 3-slice series", two, r"holds 2 DICOM series.*own folder")
    echoes = root / "echoes"
    for path in _series(echoes, oblique=False):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [-60.0, -80.0, 30.0]
        _save_dicom(ds, path)
    case("DICOM series, one position", "3 slices at one position", echoes, r"share a slice position")
    gap = root / "missing_middle_slice"
    along = sorted(_series(gap, 5), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    along[2].unlink()  # the middle slice in space (file names are not in slice order)
    case("DICOM series, a slice missing", "5 slices, the middle one deleted", gap, r"jump by .* slices are missing")
    turned = root / "one_slice_turned"
    odd = sorted(_series(turned, 4))[1]
    ds = pydicom.dcmread(odd)
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    _save_dicom(ds, odd)
    case("DICOM series, one slice turned", "one slice sagittal", turned, r"must share one orientation")
    cut_pixels = root / "member_cut_in_pixels"
    member = sorted(_series(cut_pixels))[1]
    member.write_bytes(member.read_bytes()[:-1000])
    instance = root / "instance_x"
    member = sorted(_series(instance))[0]
    _patch_text(pydicom.dcmread(member), member, "InstanceNumber", "1x")
    case(
        "series, InstanceNumber '1x'", "IS text patched in one slice", instance, r"InstanceNumber is '1x', not a number"
    )
    case("series, a member cut in its pixels", "one slice loses 1000 bytes", cut_pixels, r"IM000\d\.dcm: cannot decode")
    cut_head = root / "member_cut_in_header"
    member = sorted(_series(cut_head, 4))[1]
    member.write_bytes(member.read_bytes()[:300])
    cut_short = r"cut short or damaged \(IM000\d\.dcm\).*export the whole series again"
    case("series, a member cut in its header", "one slice cut to 300 bytes", cut_head, cut_short)
    empty_dir = case("empty folder", "mkdir", root / "empty_folder", r"no DICOM image files")
    empty_dir.mkdir()
    texts = case("folder with no images", "one text file", root / "text_folder", r"no DICOM image files")
    texts.mkdir()
    (texts / "readme.txt").write_text("no images here\n")
    _series(root / "nested" / "inner")
    case("folder holding a series folder", "series one level down", root / "nested", r"no DICOM image files")

    # --- special files, names and outputs ---------------------------------------------------------
    os.mkfifo(case("FIFO", "os.mkfifo", root / "pipe.nii", r"a FIFO, not a regular file"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(case("UNIX socket", "socket.bind", root / "sock.png", r"a device or socket")))
    server.close()
    case("symlink loop", "a link to itself", root / "loop.nii", r"cannot be opened").symlink_to("loop.nii")
    case("dangling symlink", "link to nowhere.png", root / "dangling.png", r"no such file").symlink_to("nowhere.png")
    if os.geteuid() != 0:  # root reads everything: no permission error to provoke
        locked = case("unreadable file", "chmod 000", root / "locked.png", r"permission denied")
        locked.write_bytes(_encoded(good))
        locked.chmod(0)
    unicode = case("name with spaces, unicode", "truncated .nii", root / "scan é 日本 (1).nii", r"truncated")
    unicode.write_bytes(whole[:600])
    (root / "dup_b").mkdir()
    duplicate = case("two inputs, one output name", "dup_a/same.png, dup_b/same.png", root / "dup_b" / "same.png", "")
    duplicate.write_bytes(_encoded(good))
    cases[-1].problem = r"its output .*same_enhanced\.png is also the output of .*dup_a/same\.png"
    case("existing output, no --overwrite", "out/kept_enhanced.png made first", root / "kept.png", r"already exists")
    (root / "kept.png").write_bytes(_encoded(good))
    (out / "kept_enhanced.png").write_bytes(b"an earlier output, to be kept")
    return cases, goods


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its type, permissions and content (through symbolic links too).

    Unlike :func:`tests.io_factories.file_hashes` it also sees folders and links (a folder created in
    an input series, a link redirected) and never opens what cannot be read without blocking.
    """
    entries: dict[str, tuple] = {}
    for folder, names, files in os.walk(root):
        for name in names + files:
            path = Path(folder) / name
            info = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                entries[key] = ("link", os.readlink(path), _digest(path) if path.is_file() else None)
            elif stat.S_ISREG(info.st_mode):
                readable = os.access(path, os.R_OK)
                entries[key] = ("file", info.st_mode, _digest(path) if readable else info.st_mtime_ns)
            else:  # folders, FIFOs, sockets: never opened
                entries[key] = (stat.filemode(info.st_mode),)
    return entries


def _leftovers(folder: Path) -> list[str]:
    """Temporary or hidden names anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if TEMPORARY.match(p.name) or p.name.startswith(".")]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_uspmie", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def _named(path: Path) -> str:
    """Regular expression of ``path`` or, for a folder, of a file in it (not of a longer name that
    begins with it: ``cut.nii`` in ``cut.nii.gz``)."""
    return re.escape(str(path)) + r"(/[^/:]+)?(?![\w./-])"


def _names(text: str, path: Path) -> list[str]:
    """Lines of ``text`` naming ``path`` (see :func:`_named`)."""
    pattern = re.compile(_named(path))
    return [line for line in text.splitlines() if pattern.search(line)]


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """The inputs, written once; the shared run happens in the first test that needs it."""
    base = tmp_path_factory.mktemp("battery")
    root, scratch, out = base / "inputs", base / "scratch", base / "out"
    for folder in (root, scratch, out):
        folder.mkdir()
    cases, goods = build_inputs(root, scratch, out)
    return {"base": base, "root": root, "out": out, "cases": cases, "goods": goods, "before": _snapshot(root)}


@pytest.fixture(scope="module")
def runs(battery, tmp_path_factory):
    """Two ``enhance`` processes side by side: every bad file input and the good ones into ``out``,
    and, without ``-o`` (outputs beside the inputs), a symbolic link loop and a good image."""
    paths = [str(g) for g in battery["goods"]] + [str(c.path) for c in battery["cases"]]  # dup_a before dup_b
    beside = tmp_path_factory.mktemp("beside")
    (beside / "loop.png").symlink_to("loop.png")
    (beside / "scan.png").write_bytes(_encoded(_good_slice()))
    before = _snapshot(beside)
    with ThreadPoolExecutor(2) as pool:
        shared = pool.submit(_cli, "enhance", *paths, "-o", str(battery["out"]), "--device", "cpu", cwd=battery["base"])
        local = pool.submit(_cli, "enhance", "loop.png", "scan.png", "--device", "cpu", cwd=beside)
        return {"shared": shared.result(), "beside": (local.result(), beside, before)}


@pytest.fixture(scope="module")
def shared_run(runs):
    """The run over every bad file input (see :func:`runs`)."""
    return runs["shared"]


def test_battery_has_enough_kinds(battery):
    kinds = {c.kind for c in battery["cases"]}
    assert len(kinds) == len(battery["cases"]) and len(kinds) >= 45


def test_every_bad_input_gets_one_named_line_and_the_good_ones_are_written(battery, shared_run):
    done, cases = shared_run, battery["cases"]
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    failures = [c for c in cases if c.line == "error"]
    assert done.returncode == 1, output  # documented: 1 when some input failed
    problems = []
    for c in cases:
        named = _names(output, c.path)
        line = {"error": "error: {}: .+", "warning": "warning: {}: .+", "written": "{} -> .+"}[c.line]
        matches = [m for m in (re.fullmatch(line.format(_named(c.path)), n) for n in named) if m]
        if c.line == "warning":  # written (its "->" line), with a warning line that says why
            ok = any(re.search(c.problem, m[0]) for m in matches) and any(" -> " in n for n in named)
        else:  # exactly one line names the input, and it says the problem
            ok = len(named) == len(matches) == 1 and re.search(c.problem, matches[0][0])
        if not ok:
            problems.append(f"{c.kind} ({c.path.name}): expected {c.line} line /{c.problem}/, got {named}")
    assert not problems, "\n".join(problems)
    total = len(cases) + len(battery["goods"])
    assert f"{len(failures)} of {total} inputs failed; the others were written." in done.stderr
    # one line per input and nothing else: no library chatter naming no file
    allowed_err = ("error: ", "warning: ", "  warning: ", f"{len(failures)} of {total} inputs failed")
    stray = [line for line in done.stderr.splitlines() if not line.startswith(allowed_err)]
    stray += [line for line in done.stdout.splitlines() if not re.match(r"model: |  \S|.+ -> .+  \(", line)]
    assert not stray, stray


@pytest.mark.filterwarnings("ignore:.*slice spacing is not uniform")
def test_inputs_unchanged_outputs_valid_and_nothing_left_behind(battery, shared_run):
    assert shared_run.returncode == 1
    assert _snapshot(battery["root"]) == battery["before"]
    out = battery["out"]
    assert _leftovers(out) == []
    written = battery["goods"] + [c.path for c in battery["cases"] if c.line != "error"]
    expected = {source: enhanced_path(source, out) for source in written}
    assert {p.name for p in out.iterdir()} == {p.name for p in expected.values()} | {"kept_enhanced.png"}
    assert (out / "kept_enhanced.png").read_bytes() == b"an earlier output, to be kept"
    for source, target in expected.items():
        array, meta = read_image(source)
        result, result_meta = read_image(target)
        assert result.shape == array.shape and result.dtype == array.dtype, source
        assert result_meta["format"] == meta["format"], source
        if source in battery["goods"]:
            assert not np.array_equal(result, array), source  # really enhanced


@dataclass
class Refusal:
    """A run stopped before any work (or a ``lassim`` run): its arguments and its one ``error`` line."""

    kind: str
    args: tuple[str, ...]
    error: str  # regular expression for the error line
    exit: int = 2


def _refusals(battery, tmp: Path) -> list[Refusal]:
    root = battery["root"]
    good, series = str(root / "good.png"), root / "two_series"
    existing = tmp / "existing.json"
    existing.write_text("{}")
    (tmp / "a_file").write_text("not a folder")
    enhance = ("enhance", good, "-o", str(tmp / "o"), "--device", "cpu")
    refusals = [
        Refusal(
            "--tile-size 7", (*enhance, "--tile-size", "7"), r"argument --tile-size: must be .* multiple of 4, got 7"
        ),
        Refusal("--slice-axis 5", (*enhance, "--slice-axis", "5"), r"argument --slice-axis: must be .* 0 to 2, got 5"),
        Refusal(
            "--batch-size 0", (*enhance, "--batch-size", "0"), r"argument --batch-size: must be .* at least 1, got 0"
        ),
        Refusal("--device tpu", ("enhance", good, "-o", str(tmp / "o"), "--device", "tpu"), r"unknown device 'tpu'"),
        Refusal("output folder is a file", ("enhance", good, "-o", str(tmp / "a_file")), r"a_file: .*it is a file"),
        Refusal(
            "output folder inside an input series",
            ("enhance", str(series), "-o", str(series / "out")),
            r"out: is inside the input folder .*two_series",
        ),
        Refusal(
            "--report onto an input", (*enhance, "--report", good, "--overwrite"), r"good\.png: is one of the inputs"
        ),
        Refusal("--report exists", (*enhance, "--report", str(existing)), r"existing\.json: already exists"),
        Refusal(
            "--report in a missing folder",
            (*enhance, "--report", str(tmp / "nowhere" / "r.json")),
            r"r\.json: its folder .*nowhere does not exist",
        ),
        Refusal("lassim, truncated file", ("lassim", str(root / "cut.png"), good), r"cut\.png: unreadable PNG"),
        Refusal("lassim, FIFO", ("lassim", good, str(root / "pipe.nii")), r"pipe\.nii: a FIFO"),
    ]
    if os.geteuid() != 0:  # root writes anywhere: no permission error to provoke
        locked = tmp / "read_only"
        locked.mkdir(mode=0o555)
        refusals.append(Refusal("read-only output folder", ("enhance", good, "-o", str(locked)), r"not writable"))
    return refusals


def _in_process(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    """The command run through its ``main`` in this process: exit status and what it printed (an
    escaping exception is shown as the traceback a user would see)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        except BaseException:  # noqa: B036 - what a user would see as a traceback
            traceback.print_exc(file=err)
            code = 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_runs_refused_before_any_work_say_why_in_one_line(battery, tmp_path):
    refusals = _refusals(battery, tmp_path)
    existing = (tmp_path / "existing.json").read_bytes()
    with ThreadPoolExecutor(2) as pool:  # lassim meets a FIFO: in processes, with a timeout
        lassim = [pool.submit(_cli, *r.args, cwd=tmp_path) if r.args[0] == "lassim" else None for r in refusals]
        runs = [job.result() if job else _in_process(r.args) for r, job in zip(refusals, lassim, strict=True)]
    problems = []
    for refusal, done in zip(refusals, runs, strict=True):
        errors = [
            line for line in done.stderr.splitlines() if re.match(r"(python -m napari_uspmie \w+: )?error: ", line)
        ]
        ok = (
            done.returncode == refusal.exit
            and "Traceback" not in done.stdout + done.stderr
            and len(errors) == 1
            and re.search(refusal.error, errors[0])
        )
        if not ok:
            problems.append(f"{refusal.kind}: exit {done.returncode}, stderr {done.stderr[-600:]!r}")
    assert not problems, "\n".join(problems)
    assert (tmp_path / "existing.json").read_bytes() == existing
    assert not (tmp_path / "o").exists()  # no output folder is created before every refusal is known
    assert not (battery["root"] / "two_series" / "out").exists()
    assert _snapshot(battery["root"]) == battery["before"]


def test_outputs_beside_the_inputs_and_a_symlink_loop(runs):
    """Without ``-o`` outputs go beside each input; a link loop there is named, not a traceback."""
    done, beside, before = runs["beside"]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = _names(done.stdout + done.stderr, Path("loop.png"))
    assert line.startswith("error: loop.png: cannot be opened ("), line
    after = _snapshot(beside)
    assert after.pop("scan_enhanced.png")[0] == "file" and after == before
