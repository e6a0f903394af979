"""Helpers shared by the napari contributions: layer geometry, notifications, devices.

Only the underscore plugin modules import this file, so napari may be imported here.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GEOMETRY_KEYS",
    "JobOutcome",
    "layer_geometry",
    "layer_metadata",
    "image_kind",
    "notify_error",
    "notify_info",
    "describe_exception",
    "device_choices",
    "as_float_gray",
]

logger = logging.getLogger(__name__)

#: Layer attributes that place the data in the world; a result layer copies all of them
#: (NIfTI readers put the world transform in ``affine``, not only in ``scale``).
GEOMETRY_KEYS = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


@dataclass
class JobOutcome:
    """What a background job hands back to the GUI thread.

    Jobs catch their own exceptions and return them here, so that one handler in the GUI
    thread turns every failure into a notification (no traceback dialog, no dead GUI).
    """

    value: Any = None
    error: BaseException | None = None
    cancelled: bool = False


def layer_geometry(layer: Any) -> dict[str, Any]:
    """The layer's world placement as keyword arguments for ``viewer.add_image``.

    Read from ``layer.as_layer_data_tuple()`` so that every transform (including the
    affine and the axis units/labels) travels, in napari's own representation.
    """
    _, state, _ = layer.as_layer_data_tuple()
    return {key: copy.deepcopy(state[key]) for key in GEOMETRY_KEYS if key in state}


def layer_metadata(layer: Any) -> dict[str, Any]:
    """A copy of the layer's metadata (deep where possible, so edits do not leak back)."""
    try:
        return copy.deepcopy(dict(layer.metadata))
    except Exception:  # some headers hold objects that refuse to deepcopy; a shallow copy still works
        return dict(layer.metadata)


def image_kind(layer: Any) -> str:
    """Classify an image layer as ``"2d"``, ``"rgb"``, ``"rgba"`` or ``"3d"``.

    Raises:
        ValueError: not an image layer, multiscale, or more than 3 spatial dimensions.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise ValueError(f"'{layer.name}' is a {kind} layer; choose an image layer.")
    if layer.multiscale:
        raise ValueError(f"'{layer.name}' is a multiscale image; open its full-resolution level as a plain image.")
    shape = tuple(layer.data.shape)
    if layer.rgb:
        if len(shape) != 3:
            raise ValueError(f"'{layer.name}': RGB layers must be (H, W, 3|4), got shape {shape}.")
        return "rgb" if shape[-1] == 3 else "rgba"
    if len(shape) == 2:
        return "2d"
    if len(shape) == 3:
        return "3d"
    raise ValueError(
        f"'{layer.name}' has shape {shape}: only 2D (H, W), RGB (H, W, 3) and 3D (D, H, W) images are supported; "
        "split time points or channels into separate layers first."
    )


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (and log it)."""
    from napari.utils.notifications import show_error

    logger.error(message)
    show_error(message)


def notify_info(message: str) -> None:
    """Show ``message`` as a napari info notification."""
    from napari.utils.notifications import show_info

    show_info(message)


def describe_exception(exc: BaseException) -> str:
    """One line for a user: our ValueErrors already read well; others get their type."""
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def device_choices() -> list[tuple[str, str]]:
    """``(label, value)`` pairs for the device box; labels say what was found."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
        cuda = f"cuda ({name}{f' + {count - 1} more' if count > 1 else ''})"
        auto = f"auto -> cuda ({name})"
    else:
        cuda = "cuda (not found)"
        auto = "auto -> cpu (no CUDA GPU found)"
    return [(auto, "auto"), (cuda, "cuda"), (f"cpu ({torch.get_num_threads()} threads)", "cpu")]


def as_float_gray(array: np.ndarray, rgb: bool) -> np.ndarray:
    """RGB(A) to luma with scikit-image's weights (the same as LaSSIM's); gray passes as float."""
    from napari_uspmie.metric.luma import GRAY_WEIGHTS

    arr = np.asarray(array)
    if rgb:
        return arr[..., :3].astype(np.float64) @ np.asarray(GRAY_WEIGHTS)
    return arr.astype(np.float64)


def notify_warning(message: str) -> None:
    """Show ``message`` as a napari warning notification (and log it)."""
    from napari.utils.notifications import show_warning

    logger.warning(message)
    show_warning(message)


def layer_spacing(layer: Any, slice_axis: int = 0) -> tuple[float, float] | None:
    """In-plane pixel size in mm of a layer's slices: known for layers read from NIfTI or DICOM
    (their metadata holds the file's geometry), else ``None``."""
    from napari_uspmie.inference.pipeline import slice_spacing

    metadata = getattr(layer, "metadata", None) or {}
    return slice_spacing(metadata, slice_axis) if isinstance(metadata, dict) else None
