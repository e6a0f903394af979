"""Case handling of the inference bundle: listing inputs, per-case failures, the final table.

- :func:`list_cases` turns ``dataset_dir`` into cases: every image file (PNG/JPEG/TIFF/BMP,
  NIfTI, DICOM file) and every sub-folder holding DICOM files (one series per folder).
- :class:`CaseDataset` catches a case's loading error and hands the evaluator an error record
  instead, so one broken file does not stop the others.
- :class:`EnhancementEvaluator` (MONAI's ``SupervisedEvaluator``) records each case as enhanced
  or failed (with a message naming the file); failed cases skip the per-iteration handlers.
  ``summarize()`` prints the table and exits with status 1 when any case failed.
- :func:`install_explained_error_hook` (the training bundle's ``initialize``) makes a run that
  stops on an explained error end with its one-line message and exit status 1, no traceback.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from ignite.engine import Events
from monai.data import Dataset
from monai.engines import SupervisedEvaluator

from napari_uspmie.errors import CheckpointError, ImageReadError, find_explained, log_error, user_message
from napari_uspmie.io.atomic import staged_output
from napari_uspmie.io.dicom import find_series, is_dicom_file
from napari_uspmie.io.readers import is_image_path
from napari_uspmie.io.writers import check_output_dir

__all__ = [
    "list_cases",
    "CaseDataset",
    "EnhancementEvaluator",
    "prepare_run",
    "summarize_all_ranks",
    "load_network",
    "format_table",
    "install_explained_error_hook",
]

logger = logging.getLogger("napari_uspmie.bundle")


def _has_dicom(folder: Path) -> bool:
    return any(f.is_file() and (is_dicom_file(f) or f.suffix.lower() == ".dcm") for f in folder.iterdir())


def list_cases(dataset_dir: str | os.PathLike | None) -> list[dict[str, str]]:
    """Cases of ``dataset_dir``: ``[{"image": path, "case": name}, ...]`` sorted by name.

    Image files and sub-folders holding DICOM files become cases; a DICOM file directly in
    ``dataset_dir`` is a 2D case of its own unless several files there form one series, in which
    case ``dataset_dir`` itself is the series. Hidden entries and names ending in ``_enhanced``
    (earlier outputs) are ignored; other files are skipped with a warning. ``None`` gives no cases
    (checked by :func:`prepare_run`).
    """
    if dataset_dir is None:
        return []
    root = Path(dataset_dir)
    if root.is_file():
        return [{"image": str(root), "case": root.name}]
    if not root.is_dir():
        return []
    cases, loose_dicom = [], []
    for path in sorted(root.iterdir()):
        stem = path.name.split(".")[0]
        if path.name.startswith(".") or stem.endswith("_enhanced"):
            continue
        if path.is_dir():
            if _has_dicom(path):
                cases.append({"image": str(path), "case": path.name})
            else:
                logger.warning("skipped %s: folder without DICOM files", path)
        elif is_dicom_file(path):
            loose_dicom.append(path)
        elif is_image_path(path):
            cases.append({"image": str(path), "case": path.name})
        else:
            logger.warning("skipped %s: not an image file", path)
    if loose_dicom:
        try:
            series, _ = find_series(root)
        except ImageReadError:
            series = {}
        if any(len(items) > 1 for items in series.values()):
            cases.append({"image": str(root), "case": root.name})
        else:
            cases += [{"image": str(p), "case": p.name} for p in loose_dicom]
    return sorted(cases, key=lambda c: c["case"])


def load_network(
    network_def: torch.nn.Module,
    ckpt_path: str | os.PathLike,
    device: Any,
    compile: bool = False,
    bf16: bool = False,
) -> torch.nn.Module:
    """The generator stored in ``ckpt_path`` (any checkpoint layout), on ``device``, in eval mode.

    The weights are read by :func:`napari_uspmie.inference.checkpoint.load_generator`, the loader
    the Python API uses; its architecture comes from the checkpoint, so ``--ckpt_path`` alone is
    enough even for another width or depth than ``network_def``. A missing file leaves
    ``network_def`` as initialised (config checks do not need weights; :func:`prepare_run`
    refuses to run without them). With ``compile`` the network comes back through
    :func:`napari_uspmie.inference.compilation.compile_network`; without it, on a CPU, from its
    cached compiled library when there is one (:mod:`napari_uspmie.inference.compiled_cache`, as
    the Python API's default path).
    """
    import torch

    from napari_uspmie.inference.checkpoint import load_generator
    from napari_uspmie.inference.compilation import compile_network
    from napari_uspmie.inference.compiled_cache import cached_runner

    path = Path(ckpt_path)
    architecture: dict[str, Any] = {}
    if not path.is_file():
        logger.warning("%s: no weights; the network keeps its initial values.", path)
        net = network_def
    else:
        net, architecture = load_generator(path)
    net = net.to(device).eval()
    if compile:
        return compile_network(net, bf16=bf16)
    return cached_runner(net, architecture, torch.device(device), bf16=bf16)


def prepare_run(
    dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike, ckpt_path: str | os.PathLike | None = None
) -> None:
    """Fail before any work when there is nothing to read, no usable weights or nowhere to write (exit status 2)."""
    try:
        if ckpt_path is not None:
            from napari_uspmie.inference.checkpoint import load_generator

            if not Path(ckpt_path).is_file():
                raise CheckpointError(
                    f"{ckpt_path}: no trained weights. Train the model (configs/train.json) or pass --ckpt_path."
                )
            load_generator(ckpt_path)  # read once: load_network gets the same file from the loader's cache
        if dataset_dir is None:
            raise ImageReadError("no input: pass --dataset_dir with images, NIfTI files or DICOM series folders.")
        if not Path(dataset_dir).exists():
            raise ImageReadError(f"{dataset_dir}: dataset_dir does not exist.")
        if not list_cases(dataset_dir):
            raise ImageReadError(f"{dataset_dir}: no images, NIfTI files or DICOM series found.")
        check_output_dir(output_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


class CaseDataset(Dataset):
    """MONAI ``Dataset`` whose items carry ``"error"`` (and no image) when loading fails."""

    def _transform(self, index: int) -> Any:
        item = self.data[index]
        try:
            return super()._transform(index)
        except Exception as e:  # any failure of one case is reported, the run goes on
            return {"case": item.get("case", str(item.get("image"))), "error": user_message(e)}


def _one(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


class EnhancementEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that keeps going when a case fails and reports every case.

    ``self.cases`` lists ``{"case", "status", "seconds", "output", "error"}`` per case; other
    handlers may add columns (see :mod:`napari_uspmie.bundle.evaluation`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cases: list[dict[str, Any]] = []
        self._case_failed = False

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict:
        self._case_failed = False
        name = str(_one(batchdata.get("case", f"case {len(self.cases) + 1}")))
        record: dict[str, Any] = {"case": name, "status": "failed", "seconds": 0.0, "output": "", "error": ""}
        self.cases.append(record)
        if batchdata.get("error") is not None:
            return self._fail(record, str(_one(batchdata["error"])))
        start = time.perf_counter()
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as e:  # one case's failure (bad pixels, unwritable output, OOM) is reported
            return self._fail(record, user_message(e))
        record["seconds"] = round(time.perf_counter() - start, 3)
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        first = outputs[0] if outputs and isinstance(outputs[0], dict) else {}
        record.update(status="enhanced", output=str(first.get("pred_path", "")))
        if "structure_summary" in first:
            record["structure"] = first["structure_summary"]
        logger.info("%s: enhanced in %.1f s -> %s", name, record["seconds"], record["output"])
        return output

    def _fail(self, record: dict, message: str) -> dict:
        record["error"] = message
        self._case_failed = True
        logger.error("%s: %s", record["case"], message)
        return {}

    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        # a failed case has no output: per-iteration handlers (metrics, savers, reports) skip it
        if self._case_failed and event_name == Events.ITERATION_COMPLETED:
            return
        super()._fire_event(event_name, *event_args, **event_kwargs)

    def summarize(self, csv_path: str | os.PathLike | None = None, exit_on_failure: bool = True) -> list[dict]:
        """Print the per-case table, optionally write it as CSV, and exit with status 1 if a case failed."""
        # every column any case has, in first-seen order, "error" last: a failed first case
        # (which has no metric columns) does not narrow the table
        seen = dict.fromkeys(key for case in self.cases for key in case if key != "error")
        columns = [*seen, "error"] if self.cases else []
        print(format_table(self.cases, columns))
        failed = sum(case["status"] != "enhanced" for case in self.cases)
        print(f"{len(self.cases) - failed} of {len(self.cases)} case(s) enhanced, {failed} failed.")
        if csv_path is not None:
            with staged_output(csv_path, overwrite=True) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(self.cases)
        if failed and exit_on_failure:
            sys.stdout.flush()
            raise SystemExit(1)
        return self.cases


def summarize_all_ranks(evaluator: EnhancementEvaluator, csv_path: str | os.PathLike) -> list[dict]:
    """:meth:`EnhancementEvaluator.summarize` over every process of a distributed run.

    Each rank enhanced and wrote its share of the cases (``DistributedSampler``); their case
    records are gathered, rank 0 prints the one table and writes the one CSV (sorted by case), and
    every rank exits with status 1 when any case failed anywhere. Without a process group it is
    ``summarize`` itself.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return evaluator.summarize(csv_path)
    gathered: list[list[dict] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, evaluator.cases)
    cases = sorted((case for part in gathered for case in part or []), key=lambda case: case["case"])
    if dist.get_rank() == 0:
        evaluator.cases = cases
        evaluator.summarize(csv_path, exit_on_failure=False)
    dist.barrier()  # the table is written before any rank ends
    if any(case["status"] != "enhanced" for case in cases):
        sys.stdout.flush()
        raise SystemExit(1)
    return cases


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain-text table of ``rows`` (floats with 4 decimals)."""
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


class _ExplainedErrorHook:
    """``sys.excepthook`` that shows an explained error as its message alone, other errors as before."""

    def __init__(self, previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        explained = find_explained(exc)
        if explained is None:
            self.previous(exc_type, exc, tb)  # a bug: its traceback is what is needed
        elif not explained.logged:
            log_error(logger, explained)


def install_explained_error_hook() -> bool:
    """Make an uncaught explained error end the process with its message only (exit status 1).

    Errors the user can fix (a missing ``dataset_dir``, an unreadable file, absent VGG19 weights,
    a NaN loss) are explained errors (:class:`~napari_uspmie.errors.ExplainedError`): their
    message names the file or setting and the way out. ``python -m monai.bundle run`` leaves them
    uncaught, often wrapped in MONAI's ``RuntimeError``, and the default hook would print pages of
    MONAI, ignite and fire frames after that one line. A hook is the one place that sees them all:
    many are raised while the config resolves ``@train#trainer``, before any code of a ``run``
    expression runs. Python still exits with status 1 after an uncaught exception. Other
    exceptions keep their traceback; installing twice keeps one hook.

    Returns:
        ``True`` (a value for the config's ``initialize`` list).
    """
    if not isinstance(sys.excepthook, _ExplainedErrorHook):
        sys.excepthook = _ExplainedErrorHook(sys.excepthook)
    return True
