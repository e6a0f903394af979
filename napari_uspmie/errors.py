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

import logging
from dataclasses import dataclass

__all__ = [
    "ExplainedError",
    "log_error",
    "error_chain",
    "find_explained",
    "user_message",
    "ErrorInWorker",
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


def error_chain(error: BaseException | None, implicit: bool = False) -> list[BaseException]:
    """``error`` and the errors behind it, outermost first, each once.

    Args:
        error: an exception, or ``None`` (an empty chain).
        implicit: also follow ``__context__`` (an error raised while another was handled), not
            only ``__cause__`` (``raise ... from``, how libraries wrap our errors).
    """
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or (error.__context__ if implicit else None)
    return chain


def find_explained(error: BaseException | None) -> ExplainedError | None:
    """The first :class:`ExplainedError` in ``error`` and its explicit causes (``raise ... from``).

    Libraries wrap our errors that way (MONAI's ``RuntimeError("Failed to evaluate ...")``). The
    implicit context is not followed: a bug raised while an explained error was being handled
    must keep its own traceback.
    """
    return next((e for e in error_chain(error) if isinstance(e, ExplainedError)), None)


def user_message(error: BaseException) -> str:
    """One line for a user: an explained error's message (which names the file and the fix) from
    anywhere in the chain, else the innermost error's type and first line."""
    chain = error_chain(error, implicit=True)
    explained = next((e for e in chain if isinstance(e, ExplainedError)), None)
    if explained is not None:
        return str(explained)
    last = chain[-1]
    text = str(last).strip()
    return f"{type(last).__name__}: {text.splitlines()[0] if text else ''}"


@dataclass(frozen=True)
class ErrorInWorker:
    """An explained error raised in a ``DataLoader`` worker process, sent back as data.

    PyTorch hands a worker's exception back as traceback text only; a dataset returns this
    record instead (it pickles: the class travels by reference), and the main process raises
    the original error again with :meth:`reraise`.
    """

    error_type: type
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorInWorker | None:
        """The record of the explained error in ``error``'s chain, or ``None`` when it holds none."""
        explained = find_explained(error)
        return None if explained is None else cls(type(explained), str(explained))

    def reraise(self) -> None:
        """Raise the worker's error in this process.

        Raises:
            ExplainedError: always, of the worker's error type and with its message.
        """
        raise self.error_type(self.message)


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


class OutOfScopeError(ValueError, ExplainedError):
    """An input outside what the model was trained on (modality, colour, pixel size); the message
    names the file, the reason and the override."""


class DeviceError(ValueError, ExplainedError):
    """A device that does not exist here (no such kind, no CUDA GPU, no such GPU index)."""


class SettingError(ValueError, ExplainedError):
    """A setting (option, config value) out of its range; the message names it and what it accepts."""
