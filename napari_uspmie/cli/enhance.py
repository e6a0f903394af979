"""``python -m napari_uspmie enhance``: enhance image files and DICOM series from the command line.

Each input (PNG/JPEG/TIFF/BMP, NIfTI, a DICOM file or a folder holding one DICOM series) is read,
enhanced with the shipped model (or ``--bundle`` / ``--checkpoint``) and written beside it, or in
``--output-dir``, as ``<name>_enhanced<ext>`` (a series as ``<folder>_enhanced/``) with the
source's format, geometry and value range. Inputs are never written to; an existing output is
kept unless ``--overwrite``. One failing input is reported and the others still run (exit code 1).
Each line of the report gives LaSSIM between the input and its enhancement (level 3, slice by
slice for volumes): how much of the input's structure the enhancement kept (1: all of it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run", "structure_kept"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``enhance`` command's arguments."""
    from napari_uspmie.cli.options import int_range

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, NIfTI, DICOM file or series folder")
    parser.add_argument("-o", "--output-dir", help="where to write (default: beside each input)")
    parser.add_argument("--bundle", help="MONAI bundle folder to use instead of the shipped one")
    parser.add_argument("--checkpoint", help="generator weights (model.pt or a training checkpoint)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu or cuda (default auto)")
    parser.add_argument(
        "--slice-axis", type=int_range(0, 2), default=0, help="volumes: axis enhanced slice by slice, 0-2 (default 0)"
    )
    parser.add_argument(
        "--tile-size",
        type=int_range(16, None, multiple_of=4),
        help="tile slices larger than this, a multiple of 4 (default: the bundle's, 1024)",
    )
    parser.add_argument("--batch-size", type=int_range(1), help="slices or tiles per network call")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast: faster on CPUs with AMX, results differ slightly"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (pays off on large volumes and batches)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    return parser


def _output_for(source: Path, output_dir: str | None) -> Path:
    from napari_uspmie.io.writers import enhanced_path

    return enhanced_path(source, output_dir if output_dir is not None else source.resolve().parent)


def structure_kept(image: np.ndarray, enhanced: np.ndarray, channel_axis: int | None, slice_axis: int) -> float | None:
    """Mean LaSSIM (level 3) between an input and its enhancement, over slices for volumes.

    Returns:
        The score, or ``None`` when the image is too small for level 3.
    """
    import torch

    from napari_uspmie.inference.pipeline import colour_channels, to_slices
    from napari_uspmie.metric.lassim import lassim, min_size_for_level

    def batch(array: np.ndarray) -> torch.Tensor:
        """``(N, C, H, W)`` in the layout the enhancer ran on (slices first); alpha dropped."""
        work, _ = to_slices(array, channel_axis, slice_axis)  # (N, H, W, C)
        colour = colour_channels(work.shape[-1])
        return torch.from_numpy(np.ascontiguousarray(work[..., :colour].transpose(0, 3, 1, 2), dtype=np.float32))

    a, b = batch(image), batch(enhanced)
    if min(a.shape[-2:]) < min_size_for_level(3):
        return None
    return float(lassim(b, a).mean())


def _enhance_one(enhancer, source: Path, target: Path, slice_axis: int, batch_size: int | None, overwrite: bool):
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.io.writers import write_like

    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists; pass --overwrite to replace it.")
    image, meta = read_image(source)
    channel_axis = meta.get("channel_axis")
    start = time.perf_counter()
    result = enhancer.enhance(image, channel_axis=channel_axis, slice_axis=slice_axis, batch_size=batch_size)
    seconds = time.perf_counter() - start
    # staged: an output it replaces stays intact until the new one is complete
    write_like(result, meta, target, overwrite=overwrite)
    score = structure_kept(image, result, channel_axis, slice_axis)
    return image.shape, seconds, score


def run(args: argparse.Namespace) -> int:
    """Enhance every input; return 0 when all were written, 1 when some failed.

    Raises:
        ValueError, OSError: no model could be loaded or the output folder is not writable
            (reported by the command line as ``error: ...``).
    """
    from napari_uspmie.inference.enhancer import load_enhancer
    from napari_uspmie.io.writers import check_output_dir

    sources = [Path(p) for p in args.inputs]
    if args.output_dir is not None:
        check_output_dir(args.output_dir)
    options = {"bf16": args.bf16, "compile": args.compile}
    if args.tile_size:
        options["tile_size"] = args.tile_size
    enhancer = load_enhancer(args.bundle, args.checkpoint, args.device, **options)
    print(f"model: {enhancer!r}")
    failed = 0
    for source in sources:  # a missing or bad input is reported by name; the others still run
        target = _output_for(source, args.output_dir)
        try:
            shape, seconds, score = _enhance_one(
                enhancer, source, target, args.slice_axis, args.batch_size, args.overwrite
            )
        except (ValueError, OSError) as e:  # the project's errors name the file and the problem
            failed += 1
            message = str(e)
            print(f"error: {message if str(source) in message else f'{source}: {message}'}", file=sys.stderr)
            continue
        kept = "n/a (too small)" if score is None else f"{score:.3f}"
        print(f"{source} -> {target}  ({'x'.join(map(str, shape))}, {seconds:.1f} s, LaSSIM(input, enhanced) {kept})")
    if failed:
        rest = "nothing was written" if failed == len(sources) else "the others were written"
        print(f"{failed} of {len(sources)} inputs failed; {rest}.", file=sys.stderr)
    return 1 if failed else 0
