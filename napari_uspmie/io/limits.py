"""Checks made before a file is opened or its pixels allocated: what kind of file, and how big.

A header can claim any size: a 1 kB NIfTI may declare 1200^3 voxels. Readers compare what a
header declares with the file's size and with a memory budget before allocating anything.
The budget is half the machine's memory unless ``NAPARI_USPMIE_MAX_IMAGE_BYTES`` sets it.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path

from napari_uspmie.errors import ImageReadError

__all__ = ["BUDGET_VARIABLE", "memory_budget", "check_openable", "check_declared_size", "check_gzip_stream"]

BUDGET_VARIABLE = "NAPARI_USPMIE_MAX_IMAGE_BYTES"


def memory_budget() -> int:
    """Largest image, in bytes, a reader allocates: ``$NAPARI_USPMIE_MAX_IMAGE_BYTES``, else half the RAM.

    Raises:
        ImageReadError: the variable is set but is not a positive whole number.
    """
    value = os.environ.get(BUDGET_VARIABLE)
    if value is not None:
        try:
            budget = int(value)
        except ValueError:
            budget = 0
        if budget <= 0:
            raise ImageReadError(f"{BUDGET_VARIABLE}={value!r}: set it to a positive number of bytes, or unset it.")
        return budget
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): a fixed 8 GiB
        return 8 * 2**30


def check_openable(path: Path) -> os.stat_result:
    """Refuse, without opening it, anything but a readable regular file or folder.

    Opening a FIFO blocks until a writer appears, and a device can be endless: both are refused
    from their ``stat`` alone.

    Returns:
        The file's ``stat`` (symbolic links followed).

    Raises:
        ImageReadError: missing, a link loop, not a regular file or folder, or not readable.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file or folder.") from None
    except PermissionError:  # stat needs only the folders on the way to be searchable
        raise ImageReadError(
            f"{path}: permission denied on a folder of its path; make it searchable (chmod u+x) or copy the file."
        ) from None
    except OSError as e:  # a symbolic link loop, a name too long, ...
        raise ImageReadError(f"{path}: cannot be opened ({e.strerror or e}).") from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise ImageReadError(f"{path}: {kind}, not a regular file; give an image file or a DICOM series folder.")
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)):
        fix = "chmod u+rx" if stat.S_ISDIR(info.st_mode) else "chmod u+r"
        raise ImageReadError(f"{path}: permission denied; make it readable ({fix}) or copy it somewhere readable.")
    return info


def check_declared_size(path: Path, declared: int, stored: int | None, what: str) -> None:
    """Refuse a header whose pixel data cannot be in the file or would not fit the memory budget.

    Args:
        path: the file, for the message.
        declared: bytes the header's shape and type need in memory.
        stored: bytes of pixel data the file can hold, when known (``None`` for compressed files).
        what: the header's claim in words (``"1200 x 1200 x 1200 int16 voxels"``).

    Raises:
        ImageReadError: the file is too short for its header, or the image exceeds the budget.
    """
    if stored is not None and stored < declared:
        raise ImageReadError(
            f"{path}: truncated or corrupt: the header declares {what} ({declared} bytes) but the file holds "
            f"{max(stored, 0)} bytes of data; re-export or re-copy the file."
        )
    budget = memory_budget()
    if declared > budget:
        raise ImageReadError(
            f"{path}: the header declares {what} ({declared / 2**30:.1f} GiB), more than the memory budget of "
            f"{budget / 2**30:.1f} GiB; raise {BUDGET_VARIABLE} if the image is real."
        )


def check_gzip_stream(path: Path, chunk_bytes: int = 2**22, keep: bool = False) -> int | bytes:
    """Decompress a gzip file to its end, which verifies its length and checksum.

    A gzip file cut short keeps a valid header, so header checks pass and the loss shows only when the
    voxels are read (possibly hours into a training run), or never: a reader that stops at the last
    voxel it needs never reaches the checksum.

    Args:
        path: the gzip file.
        chunk_bytes: bytes decompressed at a time.
        keep: return the decompressed bytes (one pass serves both the check and the read) instead of
            holding only ``chunk_bytes`` at a time.

    Returns:
        The number of decompressed bytes, or the bytes themselves with ``keep``.

    Raises:
        ImageReadError: the stream ends early, fails its checksum or is not gzip.
    """
    total = 0
    kept: list[bytes] = []
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(chunk_bytes):
                total += len(chunk)
                if keep:
                    kept.append(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ImageReadError(
            f"{path}: truncated or corrupt compressed data ({type(e).__name__}: {e}); re-export or re-copy the file."
        ) from None
    return b"".join(kept) if keep else total
