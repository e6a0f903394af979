"""Errors meant for users: each names the file or setting at fault and says what is wrong.

All of them subclass ``ValueError`` (except cancellation), so a command line can catch
``ValueError`` around one case, print ``error: <message>`` and go on with the next case
instead of showing a deep library traceback.

They also derive from the :class:`ExplainedError` mix-in, as do the training errors of the
same kind (``DatasetError``, ``SourceReadError``, ``VGGWeightsUnavailableError``,
``NonFiniteLossError``): the training bundle stops on one of them with its message alone,
without a traceback (:func:`napari_uspmie.bundle.workflow.install_explained_error_hook`).
"""

from __future__ import annotations

import importlib
import logging
import re

__all__ = [
    "ExplainedError",
    "log_error",
    "find_explained",
    "WorkerError",
    "ImageReadError",
    "ImageWriteError",
    "InvalidImageError",
    "CheckpointError",
    "EnhancementCancelled",
]


class ExplainedError(Exception):
    """Base of the errors whose message is all a user needs (the file or setting at fault, the fix).

    A mix-in beside the built-in base (``class DatasetError(ValueError, ExplainedError)``), so that
    ``except ValueError`` keeps working. ``logged`` is ``True`` once :func:`log_error` has shown
    the message, so that it is shown once.
    """

    logged: bool = False


def log_error(log: logging.Logger, error: ExplainedError) -> None:
    """Log ``error``'s message as one ERROR line and mark it as shown.

    Args:
        log: the logger of the module that raises or handles ``error``.
        error: the error to show.
    """
    log.error("%s", error)
    error.logged = True


def find_explained(error: BaseException | None) -> ExplainedError | None:
    """The first :class:`ExplainedError` in ``error`` and its explicit causes (``raise ... from``).

    Libraries wrap our errors that way (MONAI's ``RuntimeError("Failed to evaluate ...")``). The
    implicit context is not followed: a bug raised while an explained error was being handled
    must keep its own traceback.

    Args:
        error: an exception, or ``None``.

    Returns:
        The explained error, or ``None`` when the chain holds none.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ExplainedError):
            return error
        from_worker = _from_worker(error)
        if from_worker is not None:
            return from_worker
        seen.add(id(error))
        error = error.__cause__
    return None


class WorkerError(RuntimeError, ExplainedError):
    """An explained error raised in a ``DataLoader`` worker process, rebuilt from its text."""


# The last line of an error's traceback text: "napari_uspmie.<module>.<Class>: <message>".
_WORKER_LINE = re.compile(r"^(napari_uspmie(?:\.\w+)+)\.(\w+): (.+)$", re.MULTILINE)


def _from_worker(error: BaseException) -> WorkerError | None:
    """The explained error inside a ``DataLoader`` worker failure, if any.

    A worker process hands its exception back as text only: PyTorch raises a new error whose
    message is "Caught <type> in DataLoader worker process <n>." and the worker's traceback, so
    the cause chain is lost. The project's explained error is recognised in that text by its
    class path; the rebuilt error is kept on ``error``, so it is found (and logged) only once.
    """
    cached = getattr(error, "_napari_uspmie_explained", None)
    if cached is not None:
        return cached
    text = str(error)
    if "DataLoader worker process" not in text:
        return None
    for module_name, class_name, message in reversed(_WORKER_LINE.findall(text)):
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, ExplainedError):
            found = WorkerError(message)
            try:
                error._napari_uspmie_explained = found  # type: ignore[attr-defined]
            except AttributeError:
                pass
            return found
    return None


class ImageReadError(ValueError, ExplainedError):
    """A file or DICOM folder could not be read as an image (missing, truncated, not an image,
    unsupported layout such as 4D NIfTI or several DICOM series in one folder)."""


class ImageWriteError(ValueError, ExplainedError):
    """An output could not be written (folder not writable, output would overwrite an input,
    array does not match the source it is written like)."""


class InvalidImageError(ValueError, ExplainedError):
    """An image array cannot be enhanced (NaN/Inf values, wrong number of dimensions or channels)."""


class CheckpointError(ValueError, ExplainedError):
    """Weights could not be found or do not fit the network they are loaded into."""


class EnhancementCancelled(RuntimeError):
    """Raised inside ``Enhancer.enhance`` when the caller cancelled; nothing partial is returned."""
