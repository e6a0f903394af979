"""The enhancement pipeline's steps around the network, shared by the Python API and the bundle.

1. :func:`check_values`: real numbers only, finite, not empty;
2. :func:`to_slices`: any supported layout to ``(N, H, W, C)`` (slices first, channels last);
3. :func:`colour_channels`: grey, grey+alpha, RGB or RGBA -> the 1 or 3 channels enhanced (alpha
   is carried along unchanged);
4. the intensity window (:class:`napari_uspmie.io.intensity.IntensityMap`) maps them to [-1, 1];
5. the network runs (:mod:`napari_uspmie.inference.inferer`);
6. :func:`restore_values`: a non-finite network output is refused, then values go back to the
   input's units and dtype with the clipped tails and alpha channel of the input;
7. :func:`from_slices`: back to the input's layout.

:class:`napari_uspmie.inference.enhancer.Enhancer` runs all of them on numpy arrays; the bundle's
transforms (:mod:`napari_uspmie.bundle.transforms`) run 1, 3, 4 and 6 on MONAI's channel-first
tensors, so both faces refuse and restore exactly alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_uspmie.errors import InvalidImageError
from napari_uspmie.io.intensity import IntensityMap

__all__ = [
    "slice_spacing",
    "SliceLayout",
    "check_values",
    "colour_channels",
    "guess_channel_axis",
    "to_slices",
    "from_slices",
    "restore_values",
]

#: channels of an image -> channels enhanced (the rest, alpha, is kept as it is)
_ENHANCED = {1: 1, 2: 1, 3: 3, 4: 3}


def _named(source: object | None, text: str) -> str:
    return f"{source}: {text}" if source is not None else text


def check_values(array: np.ndarray, source: object | None = None) -> np.ndarray:
    """``array`` as a numpy array of real, finite numbers.

    Args:
        array: the image.
        source: file or layer name for the messages.

    Raises:
        InvalidImageError: empty, complex, non-numeric, holding NaN/Inf values or values beyond
            float32's range.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InvalidImageError(
            _named(source, f"cannot enhance an array of dtype {array.dtype} and shape {array.shape}.")
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InvalidImageError(
            _named(source, f"image holds {bad} NaN/Inf values; replace them (e.g. with the background value).")
        )
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:  # the network computes in float32
        largest = float(np.abs(array).max())
        if largest > np.finfo(np.float32).max:
            raise InvalidImageError(
                _named(
                    source,
                    f"values reach {largest:.3g}, beyond the float32 range (3.4e38) the enhancement computes in; "
                    "rescale the image (e.g. to its physical units) first.",
                )
            )
    return array


def colour_channels(channels: int, source: object | None = None) -> int:
    """How many of an image's ``channels`` are enhanced: 1 for grey (+alpha), 3 for RGB(A).

    Raises:
        InvalidImageError: any other channel count.
    """
    if channels not in _ENHANCED:
        raise InvalidImageError(
            _named(source, f"cannot enhance {channels}-channel images; expected grey, RGB or RGBA.")
        )
    return _ENHANCED[channels]


def guess_channel_axis(array: np.ndarray) -> int | None:
    """For arrays without metadata: a last axis of length 3 or 4 is colour (RGB(A) pictures).

    Files read with :func:`napari_uspmie.io.readers.read_image` carry their ``channel_axis``;
    pass that instead, so that a volume 3 or 4 voxels wide stays a volume.
    """
    return array.ndim - 1 if array.ndim in (3, 4) and array.shape[-1] in (3, 4) else None


@dataclass(frozen=True)
class SliceLayout:
    """How :func:`to_slices` rearranged an array, so that :func:`from_slices` can undo it."""

    spatial_ndim: int
    channel_axis: int | None
    slice_axis: int


def to_slices(array: np.ndarray, channel_axis: int | None, slice_axis: int = 0) -> tuple[np.ndarray, SliceLayout]:
    """``(N, H, W, C)`` view of ``array``: slices first, channels last.

    Args:
        array: ``(H, W)``, ``(H, W, C)``, ``(D, H, W)`` or a volume with a channel axis.
        channel_axis: the colour axis, or ``None`` for grey images and volumes. Never guessed:
            a volume of 3 or 4 columns is a volume.
        slice_axis: for volumes, the axis cut into slices (counted without the colour axis).

    Raises:
        InvalidImageError: not 2D or 3D once the colour axis is set aside.
    """
    layout_channel = None if channel_axis is None else channel_axis % array.ndim
    if layout_channel is not None:
        array = np.moveaxis(array, layout_channel, -1)
    spatial = array.ndim - (layout_channel is not None)
    if spatial not in (2, 3):
        raise InvalidImageError(f"cannot enhance an array of shape {array.shape}: expected 2D, RGB(A) or 3D.")
    if spatial == 3:
        slice_axis %= 3
        array = np.moveaxis(array, slice_axis, 0)
    else:
        array = array[None]
    if layout_channel is None:
        array = array[..., None]
    return array, SliceLayout(spatial, layout_channel, slice_axis)


def from_slices(result: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """Undo :func:`to_slices` on an array of the same ``(N, H, W, C)`` shape."""
    if layout.channel_axis is None:
        result = result[..., 0]
    result = np.moveaxis(result, 0, layout.slice_axis) if layout.spatial_ndim == 3 else result[0]
    return result if layout.channel_axis is None else np.moveaxis(result, -1, layout.channel_axis)


def restore_values(
    unit: np.ndarray, source: np.ndarray, mapping: IntensityMap, keep_range: bool, channel_axis: int
) -> np.ndarray:
    """Network output (in [-1, 1]) back to the input's units and dtype, alpha re-attached.

    Args:
        unit: the network's output, the enhanced channels only.
        source: the input image, all its channels, in the same layout as ``unit``.
        mapping: the window the input was mapped with.
        keep_range: clip to the input's value range.
        channel_axis: the channel axis of ``unit`` and ``source``.

    Raises:
        InvalidImageError: the network produced NaN/Inf values, or one value everywhere from an input
            with structure (broken weights); nothing is written.
    """
    if not np.isfinite(unit).all():
        raise InvalidImageError(
            "the network produced NaN/Inf values (broken or incompatible weights); no output was written. "
            "Check the checkpoint, or run on the CPU in float32 (no amp/bf16)."
        )
    colour = unit.shape[channel_axis]
    if unit.size and np.ptp(unit) == 0 and np.ptp(np.take(source, range(colour), axis=channel_axis)) > 0:
        raise InvalidImageError(  # one value everywhere from an image with structure: a broken model, not a result
            f"the network turned an image with structure into a flat one (every value {float(unit.flat[0]):g}); "
            "no output was written. Check the checkpoint (broken or incompatible weights)."
        )
    values = mapping.from_unit(unit, np.take(source, range(colour), axis=channel_axis), keep_range)
    if source.shape[channel_axis] == colour:
        return values
    alpha = np.take(source, range(colour, source.shape[channel_axis]), axis=channel_axis).astype(values.dtype)
    return np.concatenate([values, alpha], axis=channel_axis)


def slice_spacing(meta: dict, slice_axis: int = 0) -> tuple[float, float] | None:
    """In-plane pixel size ``(row, column)`` in mm of the slices of an image read by this package.

    Known for files with a geometry (NIfTI, DICOM: an ``affine`` in ``meta``); ``None`` for plain
    pictures, whose pixels have no physical size.
    """
    if meta.get("affine") is None or meta.get("spacing") is None:
        return None
    spacing = tuple(float(s) for s in meta["spacing"])
    if len(spacing) == 3:
        spacing = tuple(s for axis, s in enumerate(spacing) if axis != slice_axis % 3)
    return (spacing[-2], spacing[-1]) if len(spacing) >= 2 else None
