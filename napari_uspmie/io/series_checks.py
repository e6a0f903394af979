"""Consistency checks of the slices of one DICOM series before they are stacked into a volume.

A series folder can look whole and still be wrong: a slice file cut short, a slice missing (the
positions jump), a slice of another orientation (a localizer or a reformat copied in). Stacked,
such slices give a volume with a silent hole or a skewed geometry, so each check refuses the folder
with one line naming it, the problem and the fix. The checks take what the DICOM reader already
read from the headers (names, sizes, orientations, positions along the slice normal) and open no
file. Names are file names inside ``folder``; positions are in mm; orientations are the six
ImageOrientationPatient values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_uspmie.errors import ImageReadError

__all__ = [
    "ORIENTATION_TOLERANCE",
    "GAP_FACTOR",
    "is_damaged_image",
    "check_members_readable",
    "check_stackable",
    "check_same_size",
    "check_same_orientation",
    "check_positions_present",
    "check_no_gaps",
]

#: largest difference of one ImageOrientationPatient component between slices of one series
ORIENTATION_TOLERANCE = 1e-4

#: a step between neighbouring slices this many times the series' smallest step is a gap: one
#: missing slice doubles it, while scanners' rounding of positions stays within a few per cent
GAP_FACTOR = 1.5

_EXPORT_AGAIN = "copy or export the whole series again"


def _shown(names: Sequence[str], most: int = 3) -> str:
    """Up to ``most`` names, comma-separated, with ``...`` when there are more."""
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def is_damaged_image(ds) -> bool:
    """Whether a DICOM header without ``Rows`` is an image file cut short or damaged.

    Args:
        ds: a pydicom dataset read without pixel data.

    Returns:
        ``True`` when it holds no element at all, or its SOP class is one of images: a report,
        a presentation state or a DICOMDIR has no rows by nature, an image only when damaged.
    """
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    # pydicom names the image storage classes "... Image Storage" (CT, Enhanced MR, Ultrasound Multi-frame ...)
    return len(ds) == 0 or (sop_class is not None and "Image Storage" in getattr(sop_class, "name", ""))


def check_members_readable(folder: str | os.PathLike, damaged: Sequence[str]) -> None:
    """Refuse a series with image files that are cut short or damaged (an image class without image data).

    Args:
        folder: the series folder.
        damaged: names of its DICOM files of an image storage class whose header has no rows,
            columns or pixels.

    Raises:
        ImageReadError: ``damaged`` is not empty.
    """
    if damaged:
        raise ImageReadError(
            f"{folder}: {len(damaged)} DICOM image file(s) are cut short or damaged ({_shown(damaged)}): "
            f"the series would be stacked with missing slices; {_EXPORT_AGAIN}, or move those files out."
        )


def check_stackable(
    folder: str | os.PathLike,
    names: Sequence[str],
    *,
    sizes: Sequence[tuple[int, int]],
    orientations: Sequence[Sequence[float] | None],
    orientation_problem: str | None,
    placed: Sequence[bool],
) -> None:
    """Refuse slices that cannot make one volume, before their pixels are decoded.

    Args:
        folder: the series folder.
        names: the slices' file names.
        sizes: their ``(rows, columns)``.
        orientations: their ImageOrientationPatient values (``None`` when absent).
        orientation_problem: why the first slice's orientation is unusable, ``None`` when usable.
        placed: whether each has an ImagePositionPatient.

    Raises:
        ImageReadError: see :func:`check_same_size`, :func:`check_same_orientation` and
            :func:`check_positions_present`; or a shared orientation that is unusable, since the
            slices are ordered along its normal.
    """
    check_same_size(folder, sizes)
    check_same_orientation(folder, names, orientations)
    if orientation_problem is not None:
        raise ImageReadError(
            f"{folder}: {orientation_problem} (in every slice), so the slices cannot be ordered; correct it "
            "(e.g. with dcmodify) or export the series again."
        )
    check_positions_present(folder, names, placed)


def check_same_size(folder: str | os.PathLike, sizes: Sequence[tuple[int, int]]) -> None:
    """Refuse slices of different sizes (``(rows, columns)`` from their headers), before any pixel is decoded.

    Raises:
        ImageReadError: the sizes differ.
    """
    if len(set(sizes)) > 1:
        raise ImageReadError(f"{folder}: slices have different sizes {sorted(set(sizes))}.")


def check_same_orientation(
    folder: str | os.PathLike, names: Sequence[str], orientations: Sequence[Sequence[float] | None]
) -> None:
    """Refuse slices whose ImageOrientationPatient differs from the one most slices share.

    Args:
        folder: the series folder.
        names: the slices' file names.
        orientations: each slice's six ImageOrientationPatient values, ``None`` when absent.

    Raises:
        ImageReadError: a slice's orientation differs by more than :data:`ORIENTATION_TOLERANCE`
            from the usual one (or is absent where the others have one, or the reverse); the
            message names an odd slice and one of the usual ones.
    """
    present = [o is not None and len(o) == 6 for o in orientations]
    if not any(present):
        return
    if not all(present):  # the minority is the odd one out
        odd = present.index(sum(present) * 2 < len(present))
        usual = present.index(not present[odd])
    else:
        values = np.asarray(orientations, dtype=float)
        # the slice nearest the componentwise median stands for the majority, even when the odd one comes first
        usual = int(np.argmin(np.abs(values - np.median(values, axis=0)).max(axis=1)))
        off = np.abs(values - values[usual]).max(axis=1) > ORIENTATION_TOLERANCE
        if not off.any():
            return
        odd = int(np.argmax(off))
    raise ImageReadError(
        f"{folder}: {names[odd]} has ImageOrientationPatient {_text(orientations[odd])} but {names[usual]} has "
        f"{_text(orientations[usual])}; the slices of one series must share one orientation (a localizer or a "
        "reformatted slice in the folder?): move the odd slices out or export the series again."
    )


def _text(values: Sequence[float] | None) -> str:
    return "(none)" if values is None else "\\".join(f"{v:g}" for v in values)


def check_positions_present(folder: str | os.PathLike, names: Sequence[str], present: Sequence[bool]) -> None:
    """Refuse a series in which some slices have an ImagePositionPatient and others not.

    Raises:
        ImageReadError: the slices cannot all be placed, so neither order nor gaps are known.
    """
    missing = [name for name, has in zip(names, present, strict=True) if not has]
    if missing and len(missing) < len(names):
        raise ImageReadError(
            f"{folder}: {len(missing)} of {len(names)} slices have no ImagePositionPatient ({_shown(missing)}); "
            f"the slices cannot be ordered and placed: {_EXPORT_AGAIN}."
        )


def check_no_gaps(folder: str | os.PathLike, names: Sequence[str], offsets: Sequence[float]) -> None:
    """Refuse a gap in the slice positions: a step over :data:`GAP_FACTOR` times the smallest one.

    Args:
        folder: the series folder.
        names: the slices' file names, in stacking order.
        offsets: their positions along the slice normal in mm, sorted (distinct positions).

    Raises:
        ImageReadError: names the two slices around the largest gap and the series' usual step.
    """
    steps = np.diff(np.asarray(offsets, dtype=float))
    if steps.size < 2:  # two slices: one step, nothing to compare it with
        return
    usual, widest = float(steps.min()), int(np.argmax(steps))
    if steps[widest] <= GAP_FACTOR * usual:
        return
    raise ImageReadError(
        f"{folder}: the slice positions jump by {steps[widest]:.4g} mm between {Path(names[widest]).name} and "
        f"{Path(names[widest + 1]).name}, where the series' step is {usual:.4g} mm: slices are missing; "
        f"{_EXPORT_AGAIN} (or give each part of a split acquisition its own folder)."
    )
