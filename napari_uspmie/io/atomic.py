"""The one way the package writes a file or folder: to a hidden temporary name, then a rename.

An interrupted run (Ctrl+C, a full disk, a crash) never leaves a half-written output under the
final name: readers see the old file or the complete new one, nothing in between.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["split_ext", "staged_output"]


def split_ext(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of a file name, with ``.nii.gz`` as one extension."""
    if name.lower().endswith(".nii.gz"):
        return name[:-7], name[-7:]
    return os.path.splitext(name)


@contextmanager
def staged_output(out_path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``out_path``; rename it onto ``out_path`` on success.

    Args:
        out_path: the final file or folder.
        folder: stage a folder (created empty) instead of a file.

    Yields:
        The temporary path to write. It keeps the extension of ``out_path`` (writers choose
        the format from it) and is removed if the block raises.
    """
    out_path = Path(out_path)
    stem, ext = split_ext(out_path.name)
    tmp = out_path.parent / f".{stem}.tmp-{uuid.uuid4().hex[:8]}{'' if folder else ext}"
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder and out_path.exists():
            old = out_path.parent / f".{out_path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_path, old)
            os.replace(tmp, out_path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_path)
    except BaseException:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
