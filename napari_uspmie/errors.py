"""Errors meant for users: each names the file or setting at fault and says what is wrong.

All of them subclass ``ValueError`` (except cancellation), so a command line can catch
``ValueError`` around one case, print ``error: <message>`` and go on with the next case
instead of showing a deep library traceback.
"""

from __future__ import annotations

__all__ = [
    "ImageReadError",
    "ImageWriteError",
    "InvalidImageError",
    "CheckpointError",
    "EnhancementCancelled",
]


class ImageReadError(ValueError):
    """A file or DICOM folder could not be read as an image (missing, truncated, not an image,
    unsupported layout such as 4D NIfTI or several DICOM series in one folder)."""


class ImageWriteError(ValueError):
    """An output could not be written (folder not writable, output would overwrite an input,
    array does not match the source it is written like)."""


class InvalidImageError(ValueError):
    """An image array cannot be enhanced (NaN/Inf values, wrong number of dimensions or channels)."""


class CheckpointError(ValueError):
    """Weights could not be found or do not fit the network they are loaded into."""


class EnhancementCancelled(RuntimeError):
    """Raised inside ``Enhancer.enhance`` when the caller cancelled; nothing partial is returned."""
