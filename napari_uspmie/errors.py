"""Errors meant for users: each names the file or setting at fault and says what is wrong.

All of them subclass ``ValueError`` (except cancellation), so a command line can catch
``ValueError`` around one case, print ``error: <message>`` and go on with the next case
instead of showing a deep library traceback.

They also derive from the :class:`ExplainedError` mix-in, as do the training errors of the
same kind (``DatasetError``, ``SourceReadError``, ``VGGWeightsUnavailableError``,
``NonFiniteLossError``): the training bundle stops on one of them with its message alone,
without a traceback (:func:`napari_uspmie.bundle_workflow.install_explained_error_hook`).
"""

from __future__ import annotations

import logging

__all__ = [
    "ExplainedError",
    "log_error",
    "find_explained",
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
        seen.add(id(error))
        error = error.__cause__
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
