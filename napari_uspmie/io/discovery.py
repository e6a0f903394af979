"""Finding input files in folders: one rule for hidden entries and for what counts as an image."""

from __future__ import annotations

import os
from pathlib import Path

from napari_uspmie.io.readers import is_image_path

__all__ = ["visible_files", "image_files"]


def visible_files(root: str | os.PathLike) -> list[Path]:
    """Regular files under ``root`` (recursive, sorted), skipping hidden files and hidden folders.

    Hidden means a name starting with ``.`` anywhere below ``root`` (``.DS_Store``,
    ``.ipynb_checkpoints/``, the package's own temporary outputs). Links to files count as files.
    """
    root = Path(root)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def image_files(root: str | os.PathLike) -> list[Path]:
    """The :func:`visible_files` that look like images (by suffix or DICOM preamble)."""
    return [p for p in visible_files(root) if is_image_path(p)]
