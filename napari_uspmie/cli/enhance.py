"""``python -m napari_uspmie enhance``: enhance image files and DICOM series from the command line.

Each input (PNG/JPEG/TIFF/BMP, NIfTI, a DICOM file or a folder holding one DICOM series) is read,
enhanced with the shipped model (or ``--bundle`` / ``--checkpoint``) and written beside it, or in
``--output-dir``, as ``<name>_enhanced<ext>`` (a series as ``<folder>_enhanced/``) with the
source's format, geometry and value range. Inputs are never written to; an existing output is
kept unless ``--overwrite``. One failing input is reported and the others still run (exit code 1).

Every input takes the checked path (:func:`napari_uspmie.inference.checked.enhance_checked`):
inputs outside the model's scope (another modality, colour into a grey model, pixel sizes far
from the model's) are refused unless ``--allow-out-of-scope``; NIfTI and DICOM slices are enhanced
at the model's pixel size and brought back onto their own grid; the structure guard checks every
slice and ``--on-structure-loss`` says what happens when it fails: ``warn`` (write, flagged),
``keep-input`` (write the input unchanged, flagged) or ``fail`` (write nothing; exit code 3).
``--report FILE.json`` records, per input, the verdict with LaSSIM per level and slice.
Exit codes: 0 all written and kept, 1 some input failed, 3 some input lost structure under
``fail`` (takes precedence).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``enhance`` command's arguments."""
    from napari_uspmie.cli.options import int_range
    from napari_uspmie.inference.checked import STRUCTURE_POLICIES

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
    parser.add_argument(
        "--allow-out-of-scope",
        action="store_true",
        help="enhance inputs outside the model's scope (modality, colour, pixel size) instead of refusing them",
    )
    parser.add_argument("--modality", help="declare the inputs' modality (DICOM code: MR, CT, US, ...) when unknown")
    parser.add_argument(
        "--on-structure-loss",
        choices=STRUCTURE_POLICIES,
        default="warn",
        help="when the structure guard fails: warn (write, flagged), keep-input (write the input), "
        "fail (write nothing, "
        "exit 3); default warn",
    )
    parser.add_argument("--report", metavar="FILE.json", help="write the per-input verdicts and settings as JSON")
    return parser


def _output_for(source: Path, output_dir: str | None) -> Path:
    from napari_uspmie.io.writers import enhanced_path

    return enhanced_path(source, output_dir if output_dir is not None else source.resolve().parent)


def _enhance_one(enhancer, source: Path, target: Path, args: argparse.Namespace):
    from napari_uspmie.inference.checked import enhance_checked
    from napari_uspmie.inference.pipeline import slice_spacing
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.io.writers import write_like

    if target.exists() and not args.overwrite:
        raise FileExistsError(f"{target}: already exists; pass --overwrite to replace it.")
    image, meta = read_image(source)
    result = enhance_checked(
        enhancer,
        image,
        source=str(source),
        channel_axis=meta.get("channel_axis"),
        slice_axis=args.slice_axis,
        spacing=slice_spacing(meta, args.slice_axis),
        modality=args.modality or meta.get("modality") or None,
        allow_out_of_scope=args.allow_out_of_scope,
        on_structure_loss=args.on_structure_loss,
        batch_size=args.batch_size,
    )
    # staged: an output it replaces stays intact until the new one is complete
    write_like(result.output, meta, target, overwrite=args.overwrite)
    return result


def _write_report(path: str, enhancer, reports: list[dict]) -> None:
    import json

    from napari_uspmie.io.atomic import staged_output

    document = {"model": repr(enhancer), "scope": enhancer.scope.describe(), "inputs": reports}
    with staged_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    """Enhance every input; return 0 when all were written, 1 when some failed.

    Raises:
        ValueError, OSError: no model could be loaded or the output folder is not writable
            (reported by the command line as ``error: ...``).
    """
    from napari_uspmie.inference.checked import StructureLossError
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
    failed = lost = 0
    reports: list[dict] = []
    for source in sources:  # a missing or bad input is reported by name; the others still run
        target = _output_for(source, args.output_dir)
        try:
            result = _enhance_one(enhancer, source, target, args)
        except StructureLossError as e:
            lost += 1
            reports.append({**e.enhancement.report(), "output": None})
            print(f"error: {e}", file=sys.stderr)
            continue
        except (ValueError, OSError) as e:  # the project's errors name the file and the problem
            failed += 1
            message = str(e)
            message = message if str(source) in message else f"{source}: {message}"
            reports.append({"input": str(source), "error": message, "output": None})
            print(f"error: {message}", file=sys.stderr)
            continue
        reports.append({**result.report(), "output": str(target)})
        shape = "x".join(map(str, result.output.shape))
        flag = " [output is the input]" if result.kept_input else ""
        print(f"{source} -> {target}  ({shape}, {result.seconds:.1f} s, {result.verdict.summary()}){flag}")
        print(f"  {result.geometry_note()}")
        for problem in result.scope_problems:
            print(f"  warning: out of scope, enhanced because allowed: {problem}", file=sys.stderr)
        if not result.verdict.kept:
            print(f"warning: {source}: {result.verdict.summary()}", file=sys.stderr)
    if args.report:
        _write_report(args.report, enhancer, reports)
    failed += lost
    if failed:
        rest = "nothing was written" if failed == len(sources) else "the others were written"
        print(f"{failed} of {len(sources)} inputs failed; {rest}.", file=sys.stderr)
    return 3 if lost else (1 if failed else 0)
