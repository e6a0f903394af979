"""The paper's validation of LaSSIM on any folder of images (``lassim-experiment`` command).

For every clean image ``s_GT`` (made gray or RGB in ``[0, 1]`` and resized to ``size x size``
by area averaging), the experiment builds

* ``s_blur``: a ``k x k`` box blur, ``k`` = 9 / 13 / 17 (low / medium / high);
* ``s_deform+blur``: an elastic deformation (``alpha`` = 15 / 25 / 35, ``sigma`` = 2.5 pixels),
  then the same blur;

and scores ``f(s_GT, s_blur)`` and ``f(s_GT, s_deform+blur)`` for ``f`` = SSIM (scikit-image
conventions on the gray images, data range 1) and LaSSIM (level 3). A structure-aware ``f``
puts the blur-only scores above the deformed ones; the Jensen-Shannon divergence between the
two score distributions says how well it separates them (0: identical, 1: disjoint).

Each image's random displacement field is seeded by the run's seed and the image's name, so a
result does not depend on which other images are in the folder. Report files:
``scores.csv`` (per image and setting), ``jsd.csv`` and ``report.md`` (per metric and
setting), ``density_Mdef_Hblur.png`` (the paper's panel: medium deformation, high blur) and
``density_grid.png`` (all nine settings). The report folder must be new or empty (``--overwrite``:
or hold an earlier report alone); it is checked before any image is scored, written under a
temporary name and renamed into place. Images that cannot be used are named on one ``error:``
line each, the report covers the others, and the command then exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_uspmie.io.atomic import check_output_folder
from napari_uspmie.metric.lassim import lassim, ssim_map, to_gray
from napari_uspmie.research.degradations import box_blur, elastic_deform, elastic_displacement
from napari_uspmie.research.lassim_validation_report import is_report_file, write_report

__all__ = [
    "BLUR_SIZES",
    "ALPHAS",
    "SIGMA",
    "area_resize",
    "to_unit_image",
    "find_images",
    "builtin_sources",
    "folder_sources",
    "score_image",
    "run_experiment",
    "add_arguments",
    "run",
]

BLUR_SIZES = (9, 13, 17)
ALPHAS = (15.0, 25.0, 35.0)
SIGMA = 2.5
MIN_SIDE = 64

#: ``(name, loader)``: the loader returns ``(array, meta)`` or raises ``ValueError``/``OSError``.
Source = tuple[str, Callable[[], tuple[np.ndarray, dict]]]


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` resampling weights: box overlap when shrinking, linear when enlarging."""
    if n_out <= n_in:
        # Output sample i averages the input interval [i * s, (i + 1) * s), s = n_in / n_out,
        # weighting each input sample by its overlap: OpenCV's INTER_AREA when shrinking.
        scale = n_in / n_out
        edges_out = np.arange(n_out + 1) * scale
        lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
        hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
        return np.clip(hi - lo, 0, None) / scale
    # Enlarging: linear interpolation with pixel centres aligned (OpenCV INTER_LINEAR).
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    left = np.floor(src).astype(int)
    right = np.minimum(left + 1, n_in - 1)
    frac = src - left
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), left), 1 - frac)
    np.add.at(weights, (np.arange(n_out), right), frac)
    return weights


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W)`` or ``(H, W, C)`` to ``size = (height, width)`` by area averaging.

    Shrinking matches ``cv2.resize(..., interpolation=cv2.INTER_AREA)``; enlarging uses linear
    interpolation. Returns float64.
    """
    from scipy.sparse import csr_matrix

    arr = np.asarray(image, dtype=np.float64)
    h, w = arr.shape[:2]
    # The weight matrices are banded: sparse products cost a few operations per input pixel.
    rows = csr_matrix(_resize_matrix(h, int(size[0])))
    cols = csr_matrix(_resize_matrix(w, int(size[1])))
    tmp = (rows @ arr.reshape(h, -1)).reshape(int(size[0]), w, -1)  # (h', W, C)
    out = (cols @ tmp.transpose(1, 0, 2).reshape(w, -1)).reshape(int(size[1]), int(size[0]), -1)
    return np.ascontiguousarray(out.transpose(1, 0, 2).reshape(int(size[0]), int(size[1]), *arr.shape[2:]))


def to_unit_image(array: np.ndarray, meta: dict | None = None) -> np.ndarray:
    """A read image as a 2D gray ``(H, W)`` or RGB ``(H, W, 3)`` float64 array in ``[0, 1]``.

    Volumes give their middle slice (slices first); alpha channels are dropped; 8-bit data is
    divided by 255 (scikit-image's convention), anything else is min-max scaled.

    Raises:
        ValueError: unsupported layout, NaN/Inf values, or a constant image.
    """
    arr = np.asarray(array)
    channel_axis = (meta or {}).get("channel_axis", -1 if arr.ndim == 3 and arr.shape[-1] in (3, 4) else None)
    has_channels = channel_axis is not None and arr.ndim >= 3
    if arr.ndim == (4 if has_channels else 3):
        arr = arr[arr.shape[0] // 2]  # a volume: its middle slice
    if arr.ndim == 3 and has_channels:
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"unsupported image layout {np.asarray(array).shape}.")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError("the image contains NaN or Inf values.")
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        raise ValueError("the image is constant.")  # no structure to preserve or destroy
    return out / 255.0 if arr.dtype == np.uint8 else (out - lo) / (hi - lo)


def find_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden entries skipped), by suffix or DICOM preamble."""
    from napari_uspmie.io.discovery import image_files

    return image_files(folder)


def folder_sources(folder: str | Path) -> list[Source]:
    """One :data:`Source` per image file under ``folder``, named by its relative path."""
    from napari_uspmie.io.readers import read_image

    root = Path(folder)
    return [(p.relative_to(root).as_posix(), lambda p=p: read_image(p)) for p in find_images(root)]


def builtin_sources(mni_slices: Sequence[int] = tuple(range(40, 151, 10))) -> list[Source]:
    """Real images shipped inside installed packages: scikit-image's sample pictures (when
    scikit-image is installed) and axial slices of nilearn's MNI152 T1 template."""
    from napari_uspmie.io.packaged_data import mni152_path
    from napari_uspmie.io.readers import read_image

    sources: list[Source] = []
    try:
        import skimage
    except ImportError:  # an optional extra: the MNI slices alone still make a valid run
        skimage = None
    if skimage is not None:
        data_dir = Path(skimage.__file__).parent / "data"
        for path in sorted(data_dir.glob("*")):
            if path.suffix.lower() not in (".png", ".jpg") or path.name.startswith("chessboard"):
                continue  # the 8 x 8 chessboards are too small to be meaningful at 320 x 320
            sources.append((f"skimage/{path.name}", lambda p=path: read_image(p)))
    mni = mni152_path()
    cache: dict[str, tuple[np.ndarray, dict]] = {}

    def mni_slice(k: int) -> tuple[np.ndarray, dict]:
        if "volume" not in cache:
            cache["volume"] = read_image(mni)
        volume, _ = cache["volume"]
        return volume[k], {"channel_axis": None}

    sources += [(f"mni152/axial_{k:03d}", lambda k=k: mni_slice(k)) for k in mni_slices]
    return sources


def _seed_for(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def score_image(
    image: np.ndarray,
    rng: np.random.Generator,
    level: int = 3,
    blur_sizes: Sequence[int] = BLUR_SIZES,
    alphas: Sequence[float] = ALPHAS,
    sigma: float = SIGMA,
) -> dict[str, np.ndarray]:
    """Scores of one clean image against its blurred and deformed+blurred versions.

    One random field (``alpha = 1``) is drawn per image and scaled by each ``alpha``, so the
    deformation levels differ only in strength.

    Args:
        image: clean ``(H, W)`` or ``(H, W, 3)`` image in ``[0, 1]``.
        rng: generator of the displacement field.
        level, blur_sizes, alphas, sigma: experiment settings.

    Returns:
        ``ssim_blur`` and ``lassim_blur`` of shape ``(len(blur_sizes),)``;
        ``ssim_deform_blur`` and ``lassim_deform_blur`` of shape ``(len(alphas), len(blur_sizes))``.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    unit_field = elastic_displacement(tuple(x.shape[-2:]), 1.0, sigma, rng)
    # Row 0: the clean image; row 1 + i: deformed with alphas[i]. Each blur then runs once on all.
    bases = torch.cat([x] + [elastic_deform(x, alpha, displacement=unit_field * alpha) for alpha in alphas])
    blurred = torch.stack([box_blur(bases, k) for k in blur_sizes], dim=1)  # (1 + A, K, C, H, W)
    batch = blurred.flatten(0, 1)
    ref = x.expand_as(batch)
    with torch.no_grad():
        las = lassim(batch, ref, level=level).numpy()
        gray, gray_ref = to_gray(batch), to_gray(ref)
        ones = torch.ones(batch.shape[0], dtype=batch.dtype)
        ssim = ssim_map(gray, gray_ref, ones).flatten(1).mean(dim=1).numpy()
    nb = len(blur_sizes)
    return {
        "ssim_blur": ssim[:nb],
        "lassim_blur": las[:nb],
        "ssim_deform_blur": ssim[nb:].reshape(len(alphas), nb),
        "lassim_deform_blur": las[nb:].reshape(len(alphas), nb),
    }


def run_experiment(
    sources: Iterable[Source],
    out_dir: str | Path,
    size: int = 320,
    level: int = 3,
    seed: int = 0,
    limit: int | None = None,
    blur_sizes: Sequence[int] = BLUR_SIZES,
    alphas: Sequence[float] = ALPHAS,
    sigma: float = SIGMA,
    progress: bool = True,
    threads: int | None = 1,
    overwrite: bool = False,
) -> dict:
    """Run the experiment over ``sources`` and write the report into ``out_dir``.

    Unreadable or unusable images are skipped and listed (name and reason) in the report.
    ``threads`` sets torch's intra-op threads while scoring (restored afterwards): the per-image
    tensors are small, and one thread avoids the heavy slowdown of oversubscribed shared CPUs;
    ``None`` keeps the current setting. ``out_dir`` must be absent or empty, or with ``overwrite``
    hold an earlier report alone; that is checked before any image is scored.

    Returns:
        A summary: ``images`` (names used), ``skipped`` (``(name, reason)`` pairs), ``jsd``
        (rows of ``jsd.csv`` as dicts) and ``files`` (paths written).

    Raises:
        ValueError: no usable image, or an image size too small for ``level``.
        ImageWriteError: ``out_dir`` is a file, holds other files, or cannot be written.
    """
    from tqdm.auto import tqdm

    from napari_uspmie.metric.lassim import min_size_for_level

    if size < min_size_for_level(level):
        raise ValueError(f"--size {size} is too small for LaSSIM level {level} (minimum {min_size_for_level(level)}).")
    check_output_folder(out_dir, "lassim-experiment", overwrite, is_report_file)
    sources = list(sources)[:limit] if limit else list(sources)
    names: list[str] = []
    results: list[dict[str, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for name, load in tqdm(sources, desc="lassim-experiment", unit="image", disable=not progress):
            try:
                array, meta = load()
                image = to_unit_image(array, meta)
                if min(image.shape[:2]) < MIN_SIDE:
                    raise ValueError(
                        f"too small ({image.shape[0]}x{image.shape[1]}; at least {MIN_SIDE} pixels a side)"
                    )
            except (ValueError, OSError) as e:  # ImageReadError is a ValueError
                skipped.append((name, str(e)))
                continue
            image = np.clip(area_resize(image, (size, size)), 0.0, 1.0)
            results.append(score_image(image, _seed_for(name, seed), level, blur_sizes, alphas, sigma))
            names.append(name)
    finally:
        torch.set_num_threads(previous_threads)
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise ValueError(f"no usable image among {len(sources)} file(s)" + (f" ({reasons})" if reasons else "") + ".")
    settings = {"size": size, "level": level, "seed": seed, "sigma": sigma}
    return write_report(out_dir, names, results, skipped, blur_sizes, alphas, settings, overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``python -m napari_uspmie lassim-experiment``."""
    from napari_uspmie.option_types import float_range, int_range

    parser.add_argument("folder", nargs="?", help="folder of images (searched recursively)")
    parser.add_argument("--builtin", action="store_true", help="use images shipped in installed packages instead")
    parser.add_argument("--out", required=True, help="report folder (created; must be new or empty)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier report in --out (never other files)"
    )
    parser.add_argument(
        "--size", type=int_range(16, 4096), default=320, help="images are resized to SIZE x SIZE (default 320)"
    )
    parser.add_argument("--level", type=int_range(0, 8), default=3, help="LaSSIM pyramid level, 0-8 (default 3)")
    parser.add_argument(
        "--sigma", type=float_range(0.1, 64.0), default=SIGMA, help=f"elastic smoothness in pixels (default {SIGMA})"
    )
    parser.add_argument("--limit", type=int_range(1), default=None, help="use at most N images")
    parser.add_argument("--seed", type=int_range(0), default=0, help="seed of the deformations (default 0)")
    parser.add_argument(
        "--threads", type=int_range(0), default=1, help="torch threads while scoring (default 1; 0: torch's)"
    )
    return parser


def _check_out_outside(folder: Path, out: Path) -> None:
    """Refuse a report folder inside the image folder: a later run would score the report's own plots."""
    from napari_uspmie.errors import ImageWriteError

    try:
        images, target = folder.resolve(), out.resolve()
    except (RuntimeError, OSError):  # a link loop: the output check names it
        return
    if target == images or images in target.parents:
        raise ImageWriteError(f"{out}: is inside the image folder {folder}; choose a report folder outside it.")


def _naming(path: str, reason: str) -> str:
    """``reason``, starting with ``path`` unless it names the file already (the readers' errors do)."""
    return reason if path in reason else f"{path}: {reason}"


def run(args: argparse.Namespace) -> int:
    """Run the command from parsed arguments; print where the report is.

    Returns:
        0; 1 when some image could not be used: each is named on one ``error:`` line and the report
        covers the others (the convention of the ``enhance`` command).
    """
    if bool(args.folder) == bool(args.builtin):
        raise ValueError("give either a folder of images or --builtin (not both).")
    if args.builtin:
        sources, root = builtin_sources(), None
    else:
        root = Path(args.folder)
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder; give lassim-experiment a folder of images, or --builtin.")
        _check_out_outside(root, Path(args.out))
        sources = folder_sources(root)
        if not sources:
            raise ValueError(f"{root}: no image files (PNG, JPEG, TIFF, BMP, NIfTI, DICOM) found.")
    summary = run_experiment(
        sources,
        args.out,
        size=args.size,
        level=args.level,
        seed=args.seed,
        limit=args.limit,
        sigma=args.sigma,
        threads=args.threads or None,
        overwrite=args.overwrite,
    )
    for name, reason in summary["skipped"]:
        print(f"error: {_naming(str(root / name) if root else name, ' '.join(reason.split()))}", file=sys.stderr)
    print(summary["table"])
    print(f"{len(summary['images'])} images; report written to {summary['files']['report']}")
    if not summary["skipped"]:
        return 0
    total = len(summary["images"]) + len(summary["skipped"])
    print(
        f"{len(summary['skipped'])} of {total} images could not be used and are left out of the report; "
        "fix or remove them and run again.",
        file=sys.stderr,
    )
    return 1
