"""MONAI dictionary transforms that turn one training source into a 2D ``(C, H, W)`` image.

A source is a data item made by :func:`napari_uspmie.training.data.scan_unpaired_dataset`:
``{"image": path, "kind": ..., "slice": k, "axis": a, "name": ...}``. The pipeline is

``LoadImageSliced`` (the package's readers, one slice of a volume, intensity bounds) ->
``ToChannelsd`` (gray or RGB as the network expects) -> ``ScaleToUnitRanged`` ([-1, 1]) ->
``ResizeAntialiasd`` (to ``load_size``) -> MONAI ``RandSpatialCropd`` / ``RandFlipd``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform

from napari_uspmie.errors import ExplainedError, ImageReadError
from napari_uspmie.io.intensity import DEFAULT_PERCENTILES, intensity_window
from napari_uspmie.io.readers import read_image
from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = [
    "LoadImageSliced",
    "ToChannelsd",
    "ScaleToUnitRanged",
    "ResizeAntialiasd",
    "SourceReadError",
]


class SourceReadError(ValueError, ExplainedError):
    """A training file that passed the header check fails to load; the message names it."""


class LoadImageSliced(MapTransform):
    """Load a 2D image, or one slice of a volume, as a channel-first float32 array.

    Reads with :func:`napari_uspmie.io.readers.read_image`, the reader inference uses, so
    training and inference see the same arrays: volumes ``(D, H, W)`` slices first (NIfTI
    ``(k, j, i)``, DICOM series sorted along the slice normal, values rescaled to HU), cut along
    the item's ``axis`` in that convention; colour images lose their alpha channel. The item
    also receives ``"<key>_bounds"``: the intensity window of the whole image or volume
    (:func:`napari_uspmie.io.intensity.intensity_window`, the window inference uses too: full
    range for 8-bit data, robust percentiles otherwise), so every slice of a volume gets the
    same scaling.

    Args:
        keys: keys holding source paths (usually ``"image"``).
        percentiles: lower and upper percentile of the window for non-8-bit data.
        cache_size: volumes kept in memory per worker process; consecutive slices of one
            volume are then read once.
        allow_missing_keys: as for MONAI's ``MapTransform``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        cache_size: int = 4,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[np.ndarray, dict, tuple[float, float]]] = OrderedDict()

    def _read(self, path: str) -> tuple[np.ndarray, dict, tuple[float, float]]:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            array, meta = read_image(path)
        except ImageReadError as err:  # its message starts with the path: name it once
            raise SourceReadError(f"cannot read {path}: {str(err).removeprefix(f'{path}: ')}") from None
        except Exception as err:  # any other reader failure becomes one clear, named error
            raise SourceReadError(f"cannot read {path}: {type(err).__name__}: {err}") from None
        entry = (array, meta, intensity_window(array, self.percentiles))
        if self.cache_size > 0:
            self._cache[path] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry

    @staticmethod
    def _to_plane(array: np.ndarray, meta: dict, index: int, axis: int, path: str) -> np.ndarray:
        """Channel-first ``(C, H, W)`` plane of a 2D image or of slice ``index`` of a volume."""
        if meta["spatial_ndim"] == 3:
            if not 0 <= axis < 3:
                raise SourceReadError(f"{path}: slice axis {axis} is not 0, 1 or 2.")
            if not 0 <= index < array.shape[axis]:
                raise SourceReadError(f"{path}: slice {index} is outside axis {axis} of size {array.shape[axis]}.")
            array = np.take(array, index, axis=axis)
        if meta["channel_axis"] is None:
            return array[None]
        colour = {1: 1, 2: 1, 3: 3, 4: 3}.get(array.shape[-1])
        if colour is None:
            raise SourceReadError(f"{path}: unsupported image layout {array.shape}.")
        return np.moveaxis(array[..., :colour], -1, 0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            array, meta, bounds = self._read(path)
            plane = self._to_plane(array, meta, int(d.get("slice", -1)), int(d.get("axis", 0)), path)
            d[key] = np.ascontiguousarray(plane, dtype=np.float32)
            d[f"{key}_bounds"] = bounds
        return d


class ToChannelsd(MapTransform):
    """Match the network's channels: RGB -> gray with skimage's luma weights, gray -> 3 copies.

    Args:
        keys: image keys, arrays or tensors ``(C, H, W)`` with C 1 or 3.
        channels: 1 or 3.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (gray) or 3 (RGB), got {channels}.")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            c = image.shape[0]
            if c == self.channels:
                continue
            if c == 3 and self.channels == 1:
                w = np.asarray(GRAY_WEIGHTS, dtype=np.float32).reshape(3, 1, 1)
                image = (image * (torch.as_tensor(w) if isinstance(image, torch.Tensor) else w)).sum(0, keepdims=True)
            elif c == 1 and self.channels == 3:
                image = image.repeat(3, 0) if isinstance(image, np.ndarray) else image.repeat(3, 1, 1)
            else:
                raise ValueError(f"cannot convert {c} channels to {self.channels}.")
            d[key] = image
        return d


class ScaleToUnitRanged(MapTransform):
    """Map ``"<key>_bounds"`` (from :class:`LoadImageSliced`) to [-1, 1], clipping outside.

    NaNs become -1 (background), so a volume with NaN padding cannot poison the losses.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            low, high = d.get(f"{key}_bounds", (-1.0, 1.0))
            image = np.asarray(d[key], dtype=np.float32)
            image = (image - low) / max(high - low, 1e-12) * 2.0 - 1.0
            d[key] = np.clip(np.nan_to_num(image, nan=-1.0), -1.0, 1.0)
        return d


class ResizeAntialiasd(MapTransform):
    """Resize ``(C, H, W)`` images to ``spatial_size`` with PyTorch's antialiased interpolation.

    Downsizing averages over the footprint like PIL (what CycleGAN's loader uses), at a
    fraction of the cost of MONAI ``Resized``'s Gaussian pre-smoothing; the result is
    clipped to [-1, 1] because bicubic weights overshoot.

    Args:
        keys: image keys.
        spatial_size: ``(height, width)``.
        mode: ``"bicubic"`` (default, as CycleGAN) or ``"bilinear"``.
    """

    def __init__(
        self, keys: KeysCollection, spatial_size: Sequence[int], mode: str = "bicubic", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(spatial_size) != 2:
            raise ValueError(f"spatial_size must be (height, width), got {spatial_size}.")
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(np.asarray(d[key], dtype=np.float32))
            if tuple(image.shape[1:]) != self.spatial_size:
                image = F.interpolate(
                    image[None], size=self.spatial_size, mode=self.mode, antialias=True, align_corners=False
                )[0].clamp_(-1.0, 1.0)
            d[key] = image
        return d
