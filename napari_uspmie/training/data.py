"""Unpaired training data: ``dataset_dir/A`` (low quality) and ``dataset_dir/B`` (high quality).

Each domain folder may hold, in any mix and in sub-folders, PNG/JPEG/TIFF/BMP images,
NIfTI volumes (``.nii``, ``.nii.gz``), single DICOM files and DICOM series (a folder of
DICOM files of one series). Files are recognised and grouped into series exactly as inference
does (:mod:`napari_uspmie.io`). Volumes contribute one training item per slice along
``slice_axis`` of the package's ``(D, H, W)`` layout (0 = the slice axis: NIfTI's third
voxel axis, the stacking axis of a DICOM series; axial for the usual acquisitions).

Every file is checked before training (image headers, PNG chunks, and the whole compressed
stream of ``.nii.gz`` files, which hide truncation behind an intact header); files that fail are
reported by name and skipped, and a domain without any usable image stops the run.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import get_worker_info

from napari_uspmie.errors import (
    ErrorInWorker,
    ExplainedError,
    ImageReadError,
    SettingError,
    find_explained,
    log_error,
)
from napari_uspmie.io.atomic import split_ext
from napari_uspmie.io.dicom import find_series
from napari_uspmie.io.discovery import visible_files
from napari_uspmie.io.limits import check_gzip_stream
from napari_uspmie.io.readers import IMAGE_SUFFIXES, detect_format, is_image_path, nifti_volume_shape
from napari_uspmie.metric.lassim import min_size_for_level
from napari_uspmie.training.transforms import SourceReadError

__all__ = [
    "DOMAINS",
    "DatasetError",
    "DomainScan",
    "scan_domain",
    "scan_unpaired_dataset",
    "validation_items",
    "check_training_sizes",
    "UnpairedDataset",
]

logger = logging.getLogger(__name__)

DOMAINS = {"A": "low-quality", "B": "high-quality"}
#: formats read as one 2D picture each
PLAIN_FORMATS = ("png", "jpeg", "tiff", "bmp")


class DatasetError(ValueError, ExplainedError):
    """The training folders cannot give a usable unpaired dataset; the message says why."""


@dataclass
class DomainScan:
    """What one domain folder holds: usable items, rejected files with reasons, ignored files."""

    items: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _check_2d_image(path: Path) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        im.verify()  # walks the file's chunks without decoding pixels: catches truncation
    if min(size) < 1:
        raise ValueError("image has no pixels")
    return (size[1], size[0])


def _add_volume(scan: DomainScan, path: str, kind: str, shape: Sequence[int], axis: int, name: str) -> None:
    if len(shape) == 2:
        scan.items.append({"image": path, "kind": kind, "slice": -1, "axis": axis, "name": name})
        return
    if not 0 <= axis < 3:
        raise DatasetError(f"slice_axis must be 0, 1 or 2, got {axis}.")
    for k in range(shape[axis]):
        scan.items.append({"image": path, "kind": kind, "slice": k, "axis": axis, "name": f"{name}[{k}]"})


def scan_domain(folder: str | os.PathLike, slice_axis: int = 0) -> DomainScan:
    """List the usable training items of one domain folder (recursively), checking headers.

    Args:
        folder: the domain folder (``A`` or ``B``).
        slice_axis: axis of the ``(D, H, W)`` volumes along which they are cut into 2D slices.

    Returns:
        A :class:`DomainScan`; ``items`` are dicts for :class:`~napari_uspmie.training.transforms.LoadImageSliced`.
    """
    root = Path(folder)
    scan = DomainScan()
    dicom_folders: dict[Path, list[Path]] = defaultdict(list)
    for path in visible_files(root):
        rel = str(path.relative_to(root))
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty file")
            fmt = detect_format(path) if is_image_path(path) else None
            if fmt in PLAIN_FORMATS:
                _check_2d_image(path)
                scan.items.append({"image": str(path), "kind": "image", "slice": -1, "axis": slice_axis, "name": rel})
            elif fmt == "nifti":
                if path.name.lower().endswith(".gz"):
                    check_gzip_stream(path)
                _add_volume(scan, str(path), "nifti", nifti_volume_shape(path), slice_axis, rel)
            elif fmt == "dicom" or IMAGE_SUFFIXES.get(split_ext(path.name)[1].lower()) == "dicom":
                dicom_folders[path.parent].append(path)
            else:
                scan.ignored.append(str(path))
        except DatasetError:
            raise
        except Exception as err:  # header readers raise many types; the user needs the file name and why
            scan.bad.append((str(path), f"{type(err).__name__}: {err}".strip()))
    for folder_path, candidates in sorted(dicom_folders.items()):
        _add_dicom_folder(scan, root, folder_path, candidates, slice_axis)
    return scan


def _add_dicom_folder(scan: DomainScan, root: Path, folder: Path, candidates: list[Path], slice_axis: int) -> None:
    """Items of the DICOM files of one folder, grouped into series as the inference reader groups them."""
    try:
        series, skipped = find_series(folder)
    except ImageReadError as err:
        scan.bad.append((str(folder), str(err)))
        return
    for path in candidates:
        if str(path) in skipped:
            scan.bad.append((str(path), "not a DICOM image (no pixel data or no valid DICOM header)"))
    if len(series) > 1:
        for members in series.values():
            for path, _ in members:
                scan.bad.append((str(path), "its folder mixes several DICOM series; give each series its own folder"))
        return
    for members in series.values():
        if len(members) == 1:
            path, ds = members[0]
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            shape = (frames, int(ds.Rows), int(ds.Columns)) if frames > 1 else (int(ds.Rows), int(ds.Columns))
            _add_volume(scan, str(path), "dicom", shape, slice_axis, str(path.relative_to(root)))
            continue
        sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
        if len(sizes) > 1:
            scan.bad.append((str(folder), f"DICOM series with differing slice sizes {sorted(sizes)}"))
            continue
        rows, cols = sizes.pop()
        rel = str(folder.relative_to(root)) or folder.name
        _add_volume(scan, str(folder), "dicom_series", (len(members), rows, cols), slice_axis, rel)


def _report(domain: str, folder: Path, scan: DomainScan) -> None:
    for path, reason in scan.bad:
        logger.warning("domain %s: skipping unreadable file %s (%s)", domain, path, reason)
    if scan.ignored:
        shown = ", ".join(Path(p).name for p in scan.ignored[:5]) + (" ..." if len(scan.ignored) > 5 else "")
        logger.info("domain %s: ignoring %d file(s) of unknown type: %s", domain, len(scan.ignored), shown)
    logger.info("domain %s (%s): %d training images from %s", domain, DOMAINS[domain], len(scan.items), folder)


def scan_unpaired_dataset(dataset_dir: str | os.PathLike | None, slice_axis: int = 0) -> dict[str, list[dict]]:
    """Check ``dataset_dir`` and list the items of domains ``A`` and ``B``.

    Args:
        dataset_dir: folder holding ``A/`` (low quality) and ``B/`` (high quality).
        slice_axis: axis of the ``(D, H, W)`` volumes along which they are cut (0, 1 or 2).

    Returns:
        ``{"A": [...], "B": [...]}`` lists of item dicts.

    Raises:
        DatasetError: no ``dataset_dir``, a missing domain folder, or a domain without any
            usable image (the message lists the rejected files and why).
    """
    try:
        return _scan_unpaired_dataset(dataset_dir, slice_axis)
    except DatasetError as err:
        # Logged here: the bundle CLI then ends on this one line, without a traceback.
        log_error(logger, err)
        raise


def _scan_unpaired_dataset(dataset_dir: str | os.PathLike | None, slice_axis: int = 0) -> dict[str, list[dict]]:
    if dataset_dir is None or str(dataset_dir) in ("", "None", "null"):
        raise DatasetError("no dataset_dir given: pass --dataset_dir DIR, where DIR holds A/ (low) and B/ (high).")
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset_dir {root} does not exist or is not a folder.")
    missing = [d for d in DOMAINS if not (root / d).is_dir()]
    if missing:
        raise DatasetError(
            f"dataset_dir {root} lacks {' and '.join(m + '/' for m in missing)}: it must hold A/ "
            "(low-quality images) and B/ (high-quality images), unpaired."
        )
    out: dict[str, list[dict]] = {}
    for domain in DOMAINS:
        scan = scan_domain(root / domain, slice_axis)
        _report(domain, root / domain, scan)
        if not scan.items:
            detail = "; ".join(f"{Path(p).name}: {r}" for p, r in scan.bad[:10]) or "no image files found"
            raise DatasetError(
                f"domain {domain} ({DOMAINS[domain]}) in {root / domain} has no usable images ({detail}). "
                "Supported: PNG, JPEG, TIFF, BMP, NIfTI (.nii/.nii.gz), DICOM files and series folders."
            )
        out[domain] = scan.items
    return out


def validation_items(data: dict[str, list[dict]], num: int = 4, domain: str = "A") -> list[dict]:
    """``num`` items of ``domain`` spread evenly over its list (a fixed validation sample)."""
    items = data[domain]
    if num <= 0 or not items:
        return []
    if num >= len(items):
        return list(items)
    step = len(items) / num
    return [items[int(step * i + step / 2)] for i in range(num)]


def check_training_sizes(
    load_size: Sequence[int], patch_size: int, level: int = 3, perceptual_loss: str = "vgg19"
) -> bool:
    """Fail early, with the fix in the message, on sizes the networks or losses cannot take.

    Raises:
        SettingError: (a ``ValueError``) sizes not multiples of 4 (the generator halves twice), a patch larger
            than ``load_size``, or sizes too small for LaSSIM at ``level``.
    """
    load = [int(s) for s in load_size]
    if len(load) != 2:
        raise SettingError(f"load_size must be [height, width], got {load_size}.")
    for name, value in (("load_size", load), ("patch_size", [int(patch_size)])):
        if any(v % 4 for v in value):
            raise SettingError(f"{name} {value} must be multiples of 4 (the generator downsamples twice).")
    if patch_size > min(load):
        raise SettingError(f"patch_size {patch_size} is larger than load_size {load}: crops must fit resized images.")
    need = min_size_for_level(level)
    if min(load) < need:
        raise SettingError(f"load_size {load} is too small for LaSSIM at level {level} (>= {need}).")
    if perceptual_loss == "lassim" and patch_size < need:
        raise SettingError(f"patch_size {patch_size} is too small for the 'lassim' loss at level {level}.")
    return True


class UnpairedDataset(TorchDataset):
    """Pairs every domain-A item with a random domain-B item (CycleGAN's unaligned dataset).

    An epoch visits every A item once (``len = max(len(A), len(B))``, A cycling when B is
    larger); B is drawn at random, so the pairing changes every epoch. An item whose file fails
    to load although it passed the scan is skipped with a warning naming the file, and the next
    readable item is used; only a domain left without any readable item stops training.

    Args:
        data: ``{"A": items, "B": items}`` from :func:`scan_unpaired_dataset`.
        transform: MONAI transform applied to each item (key ``"image"``).
        cache_rate: fraction of items whose deterministic transforms (loading, scaling,
            resizing) are cached in memory by ``monai.data.CacheDataset``; 0 disables. The cache
            is filled here, before any ``DataLoader`` worker starts, so unreadable files are found
            and counted before the first iteration.

    Returns items ``{"A": (C, H, W) tensor, "B": tensor, "A_name": str, "B_name": str}``.
    """

    def __init__(
        self,
        data: dict[str, list[dict]],
        transform: Callable | None = None,
        cache_rate: float = 0.0,
    ) -> None:
        from monai.data import CacheDataset, Dataset

        for d in DOMAINS:
            if not data.get(d):
                raise DatasetError(f"domain {d} has no items.")
        self.data = data
        self.unreadable: dict[str, set[int]] = {d: set() for d in DOMAINS}
        if cache_rate > 0:
            # runtime_cache: a failing item raises when read (and is skipped) instead of aborting the fill
            self.domains = {
                d: CacheDataset(data[d], transform, cache_rate=cache_rate, runtime_cache=True, progress=False)
                for d in DOMAINS
            }
            for d, dataset in self.domains.items():
                for index in range(dataset.cache_num):
                    self._item(d, index)
        else:
            self.domains = {d: Dataset(data[d], transform) for d in DOMAINS}

    def __len__(self) -> int:
        return max(len(d) for d in self.domains.values())

    def _item(self, domain: str, index: int) -> dict[str, Any]:
        """Item ``index`` of ``domain``, or the next readable one after it (recording the failures)."""
        dataset = self.domains[domain]
        for step in range(len(dataset)):
            k = (index + step) % len(dataset)
            if k in self.unreadable[domain]:
                continue
            try:
                return dataset[k]
            except Exception as error:
                explained = find_explained(error)
                if not isinstance(explained, (ImageReadError, SourceReadError)):
                    raise
                self.unreadable[domain].add(k)
                name = self.data[domain][k]["name"]
                logger.warning("domain %s: skipping unreadable file %s (%s)", domain, name, explained)
        names = sorted(self.data[domain][k]["name"] for k in self.unreadable[domain])
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise DatasetError(
            f"domain {domain} ({DOMAINS[domain]}) has no readable images left (unreadable: {shown}); "
            "replace or remove the damaged files."
        )

    def __getitem__(self, index: int) -> dict[str, Any] | ErrorInWorker:
        try:
            a = self._item("A", index % len(self.domains["A"]))
            # torch's generator: seeded per DataLoader worker and by monai.utils.set_determinism.
            b = self._item("B", int(torch.randint(len(self.domains["B"]), ())))
        except Exception as error:
            record = ErrorInWorker.of(error) if get_worker_info() is not None else None
            if record is None:
                raise
            return record  # a worker's exception would reach the trainer as traceback text only
        return {"A": a["image"], "B": b["image"], "A_name": a.get("name", ""), "B_name": b.get("name", "")}

    @staticmethod
    def collate(batch: list[dict[str, Any] | ErrorInWorker]) -> dict[str, Any] | ErrorInWorker:
        """``DataLoader`` collation: a batch holding a failed item becomes that item's error record.

        The trainer raises the record's error again (:meth:`ErrorInWorker.reraise`), so a bad file
        read in a worker process stops training with its own one-line message.
        """
        from torch.utils.data import default_collate

        failed = next((item for item in batch if isinstance(item, ErrorInWorker)), None)
        return failed if failed is not None else default_collate(batch)
