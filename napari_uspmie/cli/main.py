"""Command line: ``python -m napari_uspmie COMMAND ...`` (also installed as ``napari-uspmie``).

Adding a command takes one line in :data:`COMMANDS`: a :class:`Command` naming the module that
implements it. The module either provides ``add_arguments(parser)`` and ``run(args) -> int``
(argparse-style; ``add``/``run`` can name other functions), or only ``main(argv) -> int``
(set ``add=None``; the remaining arguments are passed through). Modules are imported only
when their command runs, so a slow or broken module never affects the other commands.

Errors meant for users (``ValueError`` and its subclasses such as ``ImageReadError``, and
``OSError``) are printed as ``error: ...`` with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np

__all__ = ["Command", "COMMANDS", "build_parser", "main", "add_lassim_arguments", "run_lassim"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, and where it is implemented."""

    name: str
    help: str
    module: str
    add: str | None = "add_arguments"
    run: str = "run"


COMMANDS: tuple[Command, ...] = (
    Command(
        "enhance",
        "enhance image files, NIfTI volumes or DICOM series with the shipped model (or another)",
        "napari_uspmie.cli.enhance",
    ),
    Command(
        "lassim",
        "LaSSIM score of two image files (optionally a heatmap PNG)",
        "napari_uspmie.cli.main",
        add="add_lassim_arguments",
        run="run_lassim",
    ),
    Command(
        "lassim-experiment",
        "the paper's LaSSIM validation (blur vs deform+blur) on a folder of images",
        "napari_uspmie.research.lassim_validation",
    ),
    Command(
        "build-mri-dataset",
        "build the unpaired MRI training set from packaged volumes",
        "napari_uspmie.research.mri_dataset",
    ),
    Command(
        "evaluate-mri",
        "evaluate generators on a held-out MRI dataset",
        "napari_uspmie.research.evaluation",
        add=None,
        run="main",
    ),
    Command(
        "compare-methods",
        "the paper's comparison (CycleGAN, StillGAN, MIINet, LaMEGAN) on held-out MRI",
        "napari_uspmie.research.method_comparison",
        add=None,
        run="main",
    ),
    Command(
        "demo",
        "enhance a degraded held-out MRI volume with the shipped model",
        "napari_uspmie.research.demo",
        add=None,
        run="main",
    ),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (``None``: none, for the help)."""
    parser = argparse.ArgumentParser(
        prog="python -m napari_uspmie",
        description="Unsupervised structure-preserving medical image enhancement: LaSSIM and LaMEGAN.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        if cmd.name != command:
            sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
            continue
        module = import_module(cmd.module)
        run = getattr(module, cmd.run)
        if cmd.add is None:
            p = sub.add_parser(cmd.name, help=cmd.help, add_help=False)
            p.add_argument("argv", nargs=argparse.REMAINDER)
            p.set_defaults(command_function=lambda args, run=run: run(args.argv))
        else:
            p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
            getattr(module, cmd.add)(p)
            p.set_defaults(command_function=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command is the first bare word: options of the main parser take no values.
    command = next((a for a in argv if not a.startswith("-")), None)
    chosen = next((c for c in COMMANDS if c.name == command), None)
    if chosen is not None and chosen.add is None and argv[0] == command:
        # A command with its own parser gets its arguments untouched (argparse's REMAINDER
        # would swallow neither a leading ``--help`` nor other leading options).
        run = getattr(import_module(chosen.module), chosen.run)
        return _guarded(lambda: run(argv[1:]))
    parser = build_parser(chosen.name if chosen is not None else None)
    args = parser.parse_args(argv)
    return _guarded(lambda: args.command_function(args))


def _guarded(call) -> int:
    """Run a command; user errors become ``error: ...`` and exit code 2."""
    try:
        return int(call() or 0)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# lassim A B


def add_lassim_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``python -m napari_uspmie lassim``."""
    from napari_uspmie.option_types import int_range

    parser.add_argument("a", help="enhanced (or degraded) image: PNG, JPEG, TIFF, BMP, NIfTI or DICOM")
    parser.add_argument("b", help="the image it was made from, same size")
    parser.add_argument(
        "--level",
        type=int_range(0, 8),
        default=3,
        help="Laplacian pyramid level, 0 (finest) to --max-level (default 3)",
    )
    parser.add_argument("--max-level", type=int_range(1, 8), default=5, help="pyramid depth (default 5)")
    parser.add_argument("--heatmap", metavar="OUT.png", help="write the LaSSIM heatmap over image A")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing heatmap file (never an input)")
    return parser


def _scoring_array(array: np.ndarray, meta: dict, path: str) -> np.ndarray:
    """Drop alpha channels; keep gray ``(H, W)``, RGB ``(H, W, 3)`` and volumes ``(D, H, W)``."""
    if meta.get("channel_axis") is None:
        return array
    if array.ndim != 3:
        raise ValueError(f"{path}: multi-channel volumes are not supported (shape {array.shape}).")
    return array[..., :3] if array.shape[-1] >= 3 else array[..., 0]


def _check_heatmap_target(target: Path, inputs: tuple[Path, ...], overwrite: bool) -> None:
    """Refuse, before any work, a heatmap path that is an input or an existing file without ``--overwrite``."""
    from napari_uspmie.errors import ImageWriteError

    if any(target.resolve() == source.resolve() for source in inputs):
        raise ImageWriteError(f"{target}: is one of the images compared; choose another --heatmap path.")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise ImageWriteError(f"{target}: already exists; pass --overwrite to replace it.")


#: figure formats the heatmap overlay can be saved in (matplotlib's, chosen by the name's extension)
HEATMAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".svg")
#: values of two compared images more than this many times apart in range are probably in other units
RANGE_MISMATCH = 8.0


def _range_note(a: np.ndarray, b: np.ndarray, paths: tuple[str, str]) -> str | None:
    """A warning when the two images cannot be compared as they are: value ranges far apart (an 8-bit
    and a 16-bit copy: SSIM's constants assume one range) or no structure in either."""
    spans = [float(np.ptp(x)) for x in (a, b)]
    if min(spans) == 0:
        flat = " and ".join(p for p, s in zip(paths, spans, strict=True) if s == 0)
        return f"{flat}: flat (one value), no structure to compare; LaSSIM only compares structure."
    if max(spans) > RANGE_MISMATCH * min(spans):
        return (
            f"{paths[0]} spans {spans[0]:.4g} but {paths[1]} spans {spans[1]:.4g} in value: "
            "compare them in the same units (e.g. both 8-bit) for a meaningful score."
        )
    return None


def run_lassim(args: argparse.Namespace) -> int:
    """Print the LaSSIM score of two files and optionally write the heatmap overlay."""
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.metric.lassim_rule import lassim_by_slice

    if args.level > args.max_level:
        raise ValueError(
            f"--level {args.level} is above --max-level {args.max_level}; the band must lie in the pyramid."
        )
    if args.heatmap:
        if Path(args.heatmap).suffix.lower() not in HEATMAP_SUFFIXES:
            raise ValueError(
                f"{args.heatmap}: --heatmap writes a figure; give a name ending in {', '.join(HEATMAP_SUFFIXES)}."
            )
        _check_heatmap_target(Path(args.heatmap), (Path(args.a), Path(args.b)), args.overwrite)
    from napari_uspmie.inference.pipeline import check_values

    arrays = []
    for path in (args.a, args.b):
        array, meta = read_image(path)
        check_values(array, path)  # NaN/Inf named with their file, not as the metric's input
        arrays.append(_scoring_array(array, meta, path))  # the last file's meta says whether it is colour
    a, b = arrays
    if a.shape != b.shape:
        raise ValueError(
            f"{args.a} has shape {a.shape} but {args.b} has shape {b.shape}; "
            "LaSSIM compares an image with a processed version of it of the same size."
        )
    rgb = a.ndim == 3 and a.shape[-1] == 3 and meta.get("channel_axis") is not None
    try:
        result = lassim_by_slice(a, b, level=args.level, max_level=args.max_level, rgb=rgb, heatmap=bool(args.heatmap))
    except ValueError as e:
        raise ValueError(f"{args.a} vs {args.b}: {e}") from e
    score, heat = result.score, result.heatmap
    note = _range_note(a, b, (args.a, args.b))
    if note:
        print(f"warning: {note}", file=sys.stderr)
    lowered = (
        f"; level {args.level} does not fit {'x'.join(map(str, a.shape[-2:]))} slices"
        if result.level < args.level
        else ""
    )
    slices = f", mean of {len(result.per_slice)} slices" if len(result.per_slice) > 1 else ""
    print(f"LaSSIM = {score:.6f}  ({args.a} vs {args.b}; level {result.level} of {args.max_level}{slices}{lowered})")
    if args.heatmap:
        from napari_uspmie.io.figures import save_heatmap_overlay

        title = f"LaSSIM {score:.4f} (level {result.level}): {Path(args.a).name} vs {Path(args.b).name}"
        is_volume = heat.ndim == 3
        if is_volume:  # a volume: show its middle slice
            k = heat.shape[0] // 2
            a, heat = a[k], heat[k]
            title += f", slice {k}"
        out = save_heatmap_overlay(a, heat, args.heatmap, title=title, overwrite=args.overwrite)
        print(f"heatmap written to {out}")
    return 0
