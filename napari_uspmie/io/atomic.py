"""The one way the package writes a file or folder: to a hidden temporary name, then a rename.

An interrupted run (Ctrl+C, a full disk, a crash) never leaves a half-written output under the
final name: readers see the old file or the complete new one, nothing in between.

Without ``overwrite`` the final step is exclusive: a hard link for files (fails if the name
exists, whoever created it in the meantime), a rename onto an absent folder for folders, so two
runs writing the same output cannot both win. With ``overwrite`` a file is replaced; a folder is
replaced only when everything it holds is an earlier output of the package (the writer says how
to recognise one, e.g. a DICOM file derived by the package), so files a user put in an output
folder are never deleted.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_uspmie.errors import ImageWriteError

__all__ = ["split_ext", "staged_output", "check_output_folder"]


def split_ext(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of a file name, with ``.nii.gz`` as one extension."""
    if name.lower().endswith(".nii.gz"):
        return name[:-7], name[-7:]
    return os.path.splitext(name)


@contextmanager
def staged_output(
    out_path: str | os.PathLike,
    folder: bool = False,
    overwrite: bool = False,
    written_by_package: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``out_path``; move it onto ``out_path`` on success.

    Args:
        out_path: the final file or folder.
        folder: stage a folder (created empty) instead of a file.
        overwrite: replace an existing output (a folder only if the package wrote all it holds).
        written_by_package: for folders, whether a file in an existing output folder is an
            earlier output of the package; without it no existing folder is replaced.

    Yields:
        The temporary path to write. It keeps the extension of ``out_path`` (writers choose
        the format from it) and is removed if the block raises.

    Raises:
        ImageWriteError: ``out_path`` exists (without ``overwrite``), or is a folder holding
            files the package did not write.
    """
    out_path = Path(out_path)
    owned = written_by_package or (lambda _: False)
    _refuse_existing(out_path, folder, overwrite, owned)
    stem, ext = split_ext(out_path.name)
    tmp = out_path.parent / f".{stem}.tmp-{uuid.uuid4().hex[:8]}{'' if folder else ext}"
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder:
            _publish_folder(tmp, out_path, overwrite, owned)
        else:
            _publish_file(tmp, out_path, overwrite)
    finally:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _refuse_existing(out_path: Path, folder: bool, overwrite: bool, owned: Callable[[Path], bool]) -> None:
    """Refuse before any work when the output exists and may not be replaced."""
    if not out_path.exists() and not out_path.is_symlink():
        return
    if not overwrite:
        raise ImageWriteError(f"{out_path}: already exists; pass --overwrite (or overwrite=True) to replace it.")
    if folder != out_path.is_dir():
        kind = "folder" if out_path.is_dir() else "file"
        raise ImageWriteError(
            f"{out_path}: is a {kind}; refusing to replace it with a {'folder' if folder else 'file'}."
        )
    if folder:
        foreign = _foreign_files(out_path, owned)
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise ImageWriteError(
                f"{out_path}: holds files napari-uspmie did not write ({shown}); --overwrite replaces only its own "
                "outputs. Choose another output folder or move those files."
            )


def _foreign_files(folder: Path, owned: Callable[[Path], bool]) -> list[str]:
    """Names of the entries of ``folder`` that are not earlier outputs of the package."""
    return sorted(p.name for p in folder.iterdir() if not (p.is_file() and not p.is_symlink() and owned(p)))


def _publish_file(tmp: Path, out_path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, out_path)
        return
    try:
        os.link(tmp, out_path)  # exclusive: fails when the name exists, even if created a moment ago
    except FileExistsError:
        raise ImageWriteError(
            f"{out_path}: was created by someone else while this output was written; nothing was replaced."
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        _create_exclusively_then_replace(tmp, out_path)


def _create_exclusively_then_replace(tmp: Path, out_path: Path) -> None:
    """For file systems without hard links: claim the name with ``O_EXCL``, then rename onto it."""
    try:
        os.close(os.open(out_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise ImageWriteError(
            f"{out_path}: was created by someone else while this output was written; nothing was replaced."
        ) from None
    os.replace(tmp, out_path)


def _publish_folder(tmp: Path, out_path: Path, overwrite: bool, owned: Callable[[Path], bool]) -> None:
    if overwrite and out_path.is_dir():
        foreign = _foreign_files(out_path, owned)  # again: files may have been added while this one was written
        if foreign:
            raise ImageWriteError(
                f"{out_path}: files were added meanwhile ({', '.join(foreign[:3])}); nothing replaced."
            )
        old = out_path.parent / f".{out_path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_path, old)
        os.replace(tmp, out_path)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, out_path)  # onto an existing non-empty folder this fails rather than merging
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise ImageWriteError(
                f"{out_path}: was created by someone else while this output was written; nothing was replaced."
            ) from None
        raise


def check_output_folder(
    path: str | Path, command: str, overwrite: bool = False, owned: Callable[[Path], bool] | None = None
) -> bool:
    """Refuse, before any work, an output folder that a command could not publish whole.

    Commands write their folder under a temporary name and rename it into place
    (:func:`staged_output`), so ``path`` must be absent or an empty folder,
    or, with ``overwrite``, hold only files that ``owned`` recognises as the command's earlier
    outputs. Its parent folders are created.

    Args:
        path: the output folder.
        command: the command's name, for the messages.
        overwrite: the user allowed replacing the command's earlier outputs.
        owned: whether a file is an earlier output of the command; ``None``: none is.

    Returns:
        Whether the folder exists (then empty, or all owned): ``staged_output``'s ``overwrite``.

    Raises:
        ImageWriteError: ``path`` is not a folder, holds other files, or cannot be written there.
    """
    from napari_uspmie.io.writers import check_output_dir

    out = Path(path)
    try:
        exists = out.is_dir()
        if not exists and (out.exists() or out.is_symlink()):
            raise ImageWriteError(f"{out}: exists and is not a folder; give {command} the name of a new folder.")
        foreign = _foreign_files(out, owned if overwrite and owned else _owns_nothing) if exists else []
    except OSError as e:  # a folder on the way that cannot be searched
        raise ImageWriteError(f"{out}: cannot be used as an output folder ({e.strerror or e}).") from e
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ImageWriteError(f"{out}: already holds {shown}; {_existing_folder_fix(command, overwrite, owned)}")
    try:
        check_output_dir(out.parent)  # the temporary folder is made there: test it now, not after the work
    except ImageWriteError as e:
        raise ImageWriteError(f"{out}: cannot be made there; {e}") from e
    return exists


def _owns_nothing(path: Path) -> bool:
    """No file is an earlier output: every entry counts against an output folder."""
    return False


def _existing_folder_fix(command: str, overwrite: bool, owned: Callable[[Path], bool] | None) -> str:
    if overwrite:
        return f"--overwrite replaces only {command}'s own files: choose another folder or move those files."
    more = f", or pass --overwrite to replace {command}'s earlier output there" if owned else ""
    return f"give {command} a new or empty folder{more}."
