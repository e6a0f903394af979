"""``python -m napari_uspmie enhance``: enhance image files and DICOM series from the command line.

Each input (PNG/JPEG/TIFF/BMP, NIfTI, a DICOM file or a folder holding one DICOM series) is read,
enhanced with the shipped model (or ``--bundle`` / ``--checkpoint``) and written beside it, or in
``--output-dir``, as ``<name>_enhanced<ext>`` (a series as ``<folder>_enhanced/``) with the
source's format, geometry and value range. Inputs are never written to; an existing output (and
an existing ``--report`` file) is kept unless ``--overwrite``. One failing input is reported in one
line naming it (a file whose content contradicts its extension included) and the others still run
(exit code 1); an output folder inside an input folder, or a report path that is an input, stops
the run before any work (exit code 2).

Every input takes the checked path (:func:`napari_uspmie.inference.checked.enhance_checked`):
inputs outside the model's scope (another modality, colour into a grey model, pixel sizes far
from the model's) are refused unless ``--allow-out-of-scope``; NIfTI and DICOM slices are enhanced
at the model's pixel size and brought back onto their own grid; the structure guard checks every
slice and ``--on-structure-loss`` says what happens when it fails: ``warn`` (write, flagged),
``keep-input`` (write the input unchanged, flagged) or ``fail`` (write nothing; exit code 3).
``--report FILE.json`` records, per input, the verdict with LaSSIM per level and slice.
Exit codes: 0 all written and kept, 1 some input failed, 2 the run could not start (a bad option,
output folder, device or report path), 3 some input lost structure under ``fail`` (takes precedence).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``enhance`` command's arguments."""
    from napari_uspmie.inference.checked import STRUCTURE_POLICIES
    from napari_uspmie.option_types import int_range, modality_code

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
    parser.add_argument(
        "--modality",
        type=modality_code,
        help="declare the inputs' modality (DICOM code: MR, CT, US, ...) when unknown",
    )
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


def _resolved(path: Path) -> Path | None:
    """``path`` with its links followed, ``None`` for a symbolic link loop (its reader names it)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a link loop: RuntimeError before Python 3.13, OSError since
        return None


def _is_dir(path: Path | None) -> bool:
    """Whether ``path`` is a folder; ``False`` where it cannot be looked at (an unreadable parent)."""
    try:
        return path is not None and path.is_dir()
    except OSError:
        return False


def _input_at(target: Path, inputs: list[Path]) -> Path | None:
    """The input of this run that writing ``target`` would replace: the same file or folder, a folder
    holding ``target``, or a file inside the folder ``target``; ``None`` when there is none."""
    out = _resolved(target)
    if out is None:
        return None
    return next((f for f in inputs if f == out or f in out.parents or out in f.parents), None)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for f in (folder.absolute(), *folder.absolute().parents):
        if f.exists() or f.is_symlink():
            break
        missing.append(f)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are empty: a run that wrote nothing leaves no trace."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:  # not empty (a report in it), or already gone
            return


def _output_for(source: Path, output_dir: str | None) -> Path:
    from napari_uspmie.io.limits import check_openable
    from napari_uspmie.io.writers import enhanced_path

    # missing, a link loop, a FIFO, in an unreadable folder: the reader's one line, before any path work
    check_openable(source)
    return enhanced_path(source, output_dir if output_dir is not None else source.resolve().parent)


def _check_name_matches_content(source: Path, fmt: str) -> None:
    """Refuse a file whose content is another format than its name says (PNG bytes in ``scan.nii``):
    its output would be written in the content's format under the name's extension."""
    from napari_uspmie.errors import ImageReadError
    from napari_uspmie.io.atomic import split_ext
    from napari_uspmie.io.readers import IMAGE_SUFFIXES

    if source.is_dir():
        return
    ext = split_ext(source.name)[1].lower()
    named = IMAGE_SUFFIXES.get(ext)
    if named is not None and named != fmt:
        proper = next(suffix for suffix, kind in IMAGE_SUFFIXES.items() if kind == fmt)
        raise ImageReadError(
            f"{source}: holds a {fmt.upper()} image but its name ends in {ext}; rename it to end in {proper} "
            "and run again (its output would be a mislabelled file)."
        )


def _skipped_note(source: Path, meta: dict) -> str | None:
    """A DICOM series folder's files that were left out (not DICOM images: other files, reports, cut files)."""
    skipped = [Path(p).name for p in meta.get("skipped_files") or ()]
    if not skipped:
        return None
    shown = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
    return (
        f"{source}: left out {len(skipped)} file(s) that are not DICOM images ({shown}); "
        "check that no slice is missing."
    )


def _enhance_one(enhancer, source: Path, target: Path, args: argparse.Namespace, notes: list[str]):
    from napari_uspmie.inference.checked import enhance_checked
    from napari_uspmie.inference.pipeline import slice_spacing
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.io.writers import write_like

    if target.exists() and not args.overwrite:
        raise FileExistsError(f"{target}: already exists; pass --overwrite to replace it.")
    image, meta = read_image(source)
    _check_name_matches_content(source, meta["format"])
    skipped = _skipped_note(source, meta)
    if skipped:
        notes.append(skipped)
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


def _check_targets(args: argparse.Namespace, sources: list[Path]) -> None:
    """Refuse, before any work, an output folder inside an input folder and a report path that is an
    input, a folder, an existing file (without ``--overwrite``) or in a missing folder."""
    from napari_uspmie.errors import ImageWriteError

    inputs = [r for r in map(_resolved, sources) if r is not None]
    if args.output_dir is not None:
        out = _resolved(Path(args.output_dir))
        inside = next((f for f in inputs if out is not None and _is_dir(f) and (out == f or f in out.parents)), None)
        if inside is not None:
            raise ImageWriteError(
                f"{args.output_dir}: is inside the input folder {inside}; choose an output folder outside the inputs."
            )
    if args.report is None:
        return
    report = Path(args.report)
    resolved = _resolved(report)
    if resolved is None:
        raise ImageWriteError(f"{report}: a symbolic link loop; choose another --report path.")
    if any(resolved == r or r in resolved.parents for r in inputs):
        raise ImageWriteError(f"{report}: is one of the inputs (or inside one); choose another --report path.")
    try:
        if report.is_dir():
            raise ImageWriteError(f"{report}: is a folder; give --report a file name such as report.json.")
        if (report.exists() or report.is_symlink()) and not args.overwrite:
            raise ImageWriteError(f"{report}: already exists; pass --overwrite to replace it.")
        if not report.parent.is_dir():
            raise ImageWriteError(f"{report}: its folder {report.parent} does not exist; create it first.")
    except OSError as e:  # a folder on the way that cannot be searched
        raise ImageWriteError(f"{report}: cannot be written there ({e.strerror or e}).") from e


def _write_report(path: str, enhancer, reports: list[dict], overwrite: bool) -> None:
    import json

    from napari_uspmie.errors import ImageWriteError
    from napari_uspmie.io.atomic import staged_output

    document = {"model": repr(enhancer), "scope": enhancer.scope.describe(), "inputs": reports}
    try:
        with staged_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(document, indent=1) + "\n")
    except OSError as e:  # a full disk, a folder made read-only meanwhile: name the report
        raise ImageWriteError(f"{path}: report not written ({e.strerror or e}).") from e


def _one_line(text: str) -> str:
    """A message on one line (library errors quoted in ours can span several)."""
    return " ".join(text.split())


def _naming(source: Path, message: str) -> str:
    """``message``, starting with ``source`` unless it names it already (as itself, not as the start of a
    longer name such as its output ``<name>_enhanced``)."""
    if re.search(re.escape(str(source)) + r"(?![\w.-])", message):
        return message
    return f"{source}: {message}"


class _Notes(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextmanager
def _library_notes() -> Iterator[list[str]]:
    """Collect what libraries say (warnings, log records of WARNING and above) while one input is handled.

    Their own lines (PIL's decompression bomb warning, nibabel's header fix-ups, pydicom's value checks)
    name no file; the command prints them as ``warning: <input>: ...`` when the input is written and
    drops them when it fails, whose error line says what went wrong.
    """
    notes: list[str] = []
    root = logging.getLogger()
    loggers = [root, *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    held = [(lg, handler) for lg in loggers for handler in lg.handlers]
    for lg, handler in held:
        lg.removeHandler(handler)
    capture = _Notes(notes)
    root.addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught)
    finally:
        root.removeHandler(capture)
        for lg, handler in held:
            lg.addHandler(handler)


def run(args: argparse.Namespace) -> int:
    """Enhance every input; return 0 when all were written, 1 when some failed.

    Raises:
        ValueError, OSError: no model could be loaded, the output folder is not writable or inside an
            input folder, or the report path is unusable (reported by the command line as ``error: ...``).
    """
    from napari_uspmie.errors import ImageWriteError
    from napari_uspmie.inference.checked import StructureLossError
    from napari_uspmie.io.writers import check_output_dir

    sources = [Path(p) for p in args.inputs]
    _check_targets(args, sources)
    from napari_uspmie.inference.enhancer import load_enhancer  # seconds of imports: after the quick refusals

    options = {"bf16": args.bf16, "compile": args.compile}
    if args.tile_size:
        options["tile_size"] = args.tile_size
    enhancer = load_enhancer(args.bundle, args.checkpoint, args.device, **options)
    made: list[Path] = []  # folders this run creates for --output-dir, removed again if nothing is written
    if args.output_dir is not None:  # created (to test it) only once every refusal is known: device, model
        made = _missing_folders(Path(args.output_dir))
        check_output_dir(args.output_dir)
    print(f"model: {enhancer!r}")
    failed = lost = 0
    reports: list[dict] = []
    written: dict[Path, Path] = {}  # output -> the input it came from in this run
    inputs = [r for r in map(_resolved, sources) if r is not None]
    for source in sources:  # a missing or bad input is reported by name; the others still run
        try:
            with _library_notes() as notes:
                target = _output_for(source, args.output_dir)
                if target.absolute() in written:  # with --overwrite it would replace this run's own output
                    raise ImageWriteError(
                        f"{source}: its output {target} is also the output of {written[target.absolute()]}; "
                        "give inputs with the same name in separate runs with different --output-dir."
                    )
                clash = _input_at(target, inputs)
                if clash is not None:  # inputs are never written, --overwrite or not
                    raise ImageWriteError(
                        f"{source}: its output {target} would replace the input {clash} of this run; "
                        "enhance it with another --output-dir (or rename that input)."
                    )
                result = _enhance_one(enhancer, source, target, args, notes)
        except StructureLossError as e:
            lost += 1
            reports.append({**e.enhancement.report(), "output": None})
            print(f"error: {_one_line(str(e))}", file=sys.stderr)
            continue
        except (ValueError, OSError) as e:  # the project's errors name the file and the problem
            failed += 1
            message = _naming(source, _one_line(str(e)))
            reports.append({"input": str(source), "error": message, "output": None})
            print(f"error: {message}", file=sys.stderr)
            continue
        written[target.absolute()] = source
        reports.append({**result.report(), "output": str(target)})
        shape = "x".join(map(str, result.output.shape))
        flag = " [output is the input]" if result.kept_input else ""
        print(f"{source} -> {target}  ({shape}, {result.seconds:.1f} s, {result.verdict.summary()}){flag}")
        print(f"  {result.geometry_note()}")
        for problem in result.scope_problems:
            print(f"  warning: out of scope, enhanced because allowed: {problem}", file=sys.stderr)
        if not result.verdict.kept:
            print(f"warning: {source}: {result.verdict.summary()}", file=sys.stderr)
        for note in dict.fromkeys(_one_line(n) for n in notes):  # pydicom both logs and warns: once each
            print(f"warning: {_naming(source, note)}", file=sys.stderr)
    if args.report:
        _write_report(args.report, enhancer, reports, args.overwrite)
    failed += lost
    if not written:
        _remove_empty(made)
    if failed:
        rest = "nothing was written" if failed == len(sources) else "the others were written"
        print(f"{failed} of {len(sources)} inputs failed; {rest}.", file=sys.stderr)
    return 3 if lost else (1 if failed else 0)
