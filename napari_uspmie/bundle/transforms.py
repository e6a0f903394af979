"""MONAI pieces of the inference bundle: reader, pre/post-processing transforms and the saver.

``configs/inference.json`` chains them::

    LoadMedicalImaged  ->  PrepareForNetworkd  ->  EnhancementInferer
      ->  RestoreFromNetworkd  ->  SaveEnhancedd

Layouts: MONAI's loaders (and MONAI Label, which runs the same preprocessing, inferer and
postprocessing) use channel-first arrays with spatial axes in index order ``(x, y[, z])``
(``(W, H[, D])``) and an affine for that order. ``PrepareForNetworkd`` reverses the spatial axes
to the package's slices-first ``(C, [D,] H, W)`` so the 2D network sees rows and columns as the
Python API does; ``RestoreFromNetworkd`` turns the result back, so ``pred`` matches the loaded
image voxel for voxel and keeps its metadata (affine, spatial shape) for MONAI Label's
``Restored`` and writers.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImaged, MapTransform, SaveImaged
from monai.utils import ensure_tuple

from napari_uspmie.inference.geometry import RESAMPLE_KEY, resample_factors
from napari_uspmie.inference.pipeline import check_values, colour_channels, restore_values, slice_spacing
from napari_uspmie.inference.scope import ModelScope, check_scope
from napari_uspmie.io.intensity import DEFAULT_PERCENTILES, IntensityMap
from napari_uspmie.io.readers import REVERSE_AXES, is_image_path, read_image
from napari_uspmie.io.writers import enhanced_path, write_like

__all__ = [
    "MedicalImageReader",
    "LoadMedicalImaged",
    "PrepareForNetworkd",
    "RestoreFromNetworkd",
    "SaveEnhancedd",
    "reverse_spatial",
]

#: reader metadata that travels through MONAI's collation (plain values only)
_PLAIN_KEYS = ("format", "source", "dtype", "series_uid", "has_channels", "spatial_ndim")


def reverse_spatial(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Reverse the spatial axes of a channel-first array: ``(C, a, b[, c]) -> (C, [c,] b, a)``."""
    order = (0, *range(x.ndim - 1, 0, -1))
    return x.permute(*order) if isinstance(x, torch.Tensor) else x.transpose(order)


class MedicalImageReader(ImageReader):
    """MONAI ``ImageReader`` over :func:`napari_uspmie.io.readers.read_image` (PNG/JPEG/TIFF, NIfTI, DICOM
    files and DICOM series folders), returning MONAI's layout (spatial axes in index order, channel
    last before ``EnsureChannelFirst``) and a RAS affine for it.

    Args:
        series_uid: series to read from folders holding several.
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        path = Path(ensure_tuple(filename)[0])
        return path.is_dir() or is_image_path(path)

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> tuple[np.ndarray, dict]:
        paths = ensure_tuple(data)
        if len(paths) != 1:
            raise ValueError(f"MedicalImageReader reads one file or series folder at a time, got {len(paths)}.")
        return read_image(paths[0], series_uid=self.series_uid)

    def get_data(self, img: tuple[np.ndarray, dict]) -> tuple[np.ndarray, dict]:
        array, meta = img
        spatial, channels = meta["spatial_ndim"], meta["channel_axis"] is not None
        order = (*range(spatial - 1, -1, -1), *([spatial] if channels else []))
        out = np.ascontiguousarray(array.transpose(order))
        if meta.get("affine") is not None:
            affine = meta["affine"] @ REVERSE_AXES  # index (k, i, j) -> (j, i, k)
        else:
            affine = np.diag([*reversed(meta["spacing"]), *[1.0] * (4 - spatial)])
        header = {k: meta[k] for k in _PLAIN_KEYS if k in meta}
        header["has_channels"] = channels
        header["series_uid"] = meta.get("series_uid") or ""
        header["modality"] = str(meta.get("modality") or "")
        # in-plane pixel size of the slices the bundle enhances (axis 0); [] when unknown
        header["slice_spacing"] = list(slice_spacing(meta, 0) or ())
        header.update(
            affine=affine,
            original_affine=affine.copy(),
            spatial_shape=np.asarray(out.shape[:spatial]),
            original_channel_dim=-1 if channels else "no_channel",
            space="RAS",
        )
        return out, header


class LoadMedicalImaged(LoadImaged):
    """``LoadImaged`` that reads with :class:`MedicalImageReader` only.

    MONAI's ``LoadImaged`` falls back to every other registered reader when the chosen one fails,
    which buries our message (naming the file and the problem) under theirs and costs seconds per
    broken file; this one raises the reader's error. Being a ``LoadImaged``, MONAI Label swaps or
    wraps it like any bundle loader.

    Args:
        keys: keys holding paths.
        series_uid: series to read from folders holding several.
        kwargs: other ``LoadImaged`` arguments (``ensure_channel_first``, ``image_only``, ``dtype``...).
    """

    def __init__(self, keys: KeysCollection = "image", series_uid: str | None = None, **kwargs: Any) -> None:
        self._reader = MedicalImageReader(series_uid)
        super().__init__(keys, reader=self._reader, **kwargs)

    def __call__(self, data, reader: ImageReader | None = None):
        return super().__call__(data, reader=reader or self._reader)


class PrepareForNetworkd(MapTransform):
    """Slices-first layout and [-1, 1] intensities for the network.

    Adds ``"<key>_enhance"`` (the intensity window and range, see
    :class:`napari_uspmie.io.intensity.IntensityMap`) and ``"<key>_source"`` (the input values in
    slices-first layout, used for restoring clipped tails and alpha).

    With a model ``scope`` (:class:`napari_uspmie.inference.scope.ModelScope`), inputs outside it
    are refused unless ``allow_out_of_scope``, and the size factors to the model's pixel size are
    put in the image's metadata (:data:`napari_uspmie.inference.geometry.RESAMPLE_KEY`), where
    :class:`napari_uspmie.inference.inferer.EnhancementInferer` finds them.

    Args:
        keys: image keys (channel-first MetaTensors or arrays in MONAI's layout).
        percentiles: window percentiles for non-8-bit data.
        scope: the model's scope (default: unknown, nothing refused or resampled).
        allow_out_of_scope: enhance inputs outside the scope.
        modality: the inputs' modality when their files do not say (DICOM code).

    Raises:
        InvalidImageError: what :mod:`napari_uspmie.inference.pipeline` refuses (complex or non-finite
            values, more than 4 channels); the message names the file.
        OutOfScopeError: outside the scope and not allowed.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        allow_missing_keys=False,
        scope: ModelScope | None = None,
        allow_out_of_scope: bool = False,
        modality: str | None = None,
    ):
        super().__init__(keys, allow_missing_keys)
        self.percentiles = tuple(float(p) for p in percentiles)
        self.scope = scope or ModelScope()
        self.allow_out_of_scope, self.modality = bool(allow_out_of_scope), modality

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else dict(d.get(f"{key}_meta_dict", {}))
            source = meta.get("filename_or_obj", key)
            arr = check_values(reverse_spatial(_as_numpy(img)), source)
            colour = colour_channels(arr.shape[0], source)
            spacing = tuple(float(v) for v in meta.get("slice_spacing") or ()) or None
            modality = str(meta.get("modality") or "") or self.modality
            check_scope(
                str(source),
                self.scope,
                channels=colour,
                modality=modality,
                spacing=spacing,
                allow_out_of_scope=self.allow_out_of_scope,
            )
            meta = {
                **dict(meta),
                RESAMPLE_KEY: list(resample_factors(spacing, self.scope.pixel_spacing_mm) or (1.0, 1.0)),
            }
            dtype = meta.get("dtype") or str(arr.dtype)
            mapping = IntensityMap.fit(arr[:colour], self.percentiles, dtype=dtype)
            unit = torch.from_numpy(np.ascontiguousarray(mapping.to_unit(arr[:colour])))
            d[key] = MetaTensor(unit, meta=copy.deepcopy(dict(meta))) if isinstance(img, MetaTensor) else unit
            d[f"{key}_enhance"] = {f: getattr(mapping, f) for f in ("low", "high", "vmin", "vmax", "dtype")}
            d[f"{key}_source"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return d


def _as_numpy(img: Any) -> np.ndarray:
    """A loaded image as numpy; complex data (which ``torch.as_tensor`` would keep) is left complex
    so that the pipeline's check refuses it instead of losing the imaginary part."""
    if isinstance(img, torch.Tensor):
        return img.detach().cpu().numpy()
    return np.asarray(img)


def _plain(value: Any) -> Any:
    """A scalar tensor or a one-item list (what collation makes of a value) back to a Python value."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    return value


class RestoreFromNetworkd(MapTransform):
    """Network output back to the input's units, dtype, channels (alpha re-attached) and MONAI layout.

    Also stores ``"<key>_input"``: the input values (float32) in the same layout as the result.

    Args:
        keys: prediction keys.
        image_key: the key :class:`PrepareForNetworkd` processed.
        keep_range: clip to the input's value range.
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", keep_range: bool = True, **kwargs):
        super().__init__(keys, kwargs.pop("allow_missing_keys", False))
        self.image_key, self.keep_range = image_key, keep_range

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        state = {k: _plain(v) for k, v in d[f"{self.image_key}_enhance"].items()}
        mapping = IntensityMap(**state)
        source = torch.as_tensor(d[f"{self.image_key}_source"]).cpu().numpy()
        image = d.get(self.image_key)
        for key in self.key_iterator(d):
            y = torch.as_tensor(d[key]).detach().float().cpu().numpy()
            out = reverse_spatial(restore_values(y, source, mapping, self.keep_range, channel_axis=0))
            if out.dtype in (np.uint16, np.uint32):  # torch has few ops for these: widen, values unchanged
                out = out.astype(np.int32 if out.dtype == np.uint16 else np.int64)
            tensor = torch.from_numpy(np.ascontiguousarray(out))
            if isinstance(image, MetaTensor):
                tensor = MetaTensor(tensor, meta=copy.deepcopy(dict(image.meta)))
            d[key] = tensor
            # the input in the same layout, for comparisons such as LaSSIM(pred, input)
            d[f"{key}_input"] = torch.from_numpy(np.ascontiguousarray(reverse_spatial(source)))
        return d


class SaveEnhancedd(SaveImaged):
    """Write each prediction like its source with :func:`napari_uspmie.io.writers.write_like`.

    Output: ``<output_dir>/<stem>_<postfix><ext>`` for files and ``<output_dir>/<folder>_<postfix>/``
    for DICOM series; the path is stored under ``path_key``. It subclasses ``SaveImaged`` only so
    that MONAI Label's bundle task drops it like any other saver (MONAI Label writes its own result).

    Args:
        keys: prediction keys (MetaTensors carrying the reader's metadata).
        output_dir: output folder (must exist and be writable).
        output_postfix: appended to the source's name.
        path_key: key receiving the written path.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str = "./",
        output_postfix: str = "enhanced",
        path_key: str = "pred_path",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)  # SaveImaged's own writer set-up is not used
        self.output_dir, self.output_postfix, self.path_key = Path(output_dir), output_postfix, path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            meta = {k: _plain(v) for k, v in pred.meta.items() if k in _PLAIN_KEYS or k == "filename_or_obj"}
            source = meta.get("source") or meta["filename_or_obj"]
            arr = reverse_spatial(torch.as_tensor(pred).cpu().numpy())
            arr = np.moveaxis(arr, 0, -1) if meta.get("has_channels") else arr[0]
            if meta.get("dtype"):
                arr = arr.astype(meta["dtype"])
            write_meta = {"format": meta["format"], "source": source, "dtype": meta.get("dtype", str(arr.dtype))}
            write_meta["channel_axis"] = -1 if meta.get("has_channels") else None
            if meta.get("series_uid"):
                write_meta["series_uid"] = meta["series_uid"]
            out = enhanced_path(source, self.output_dir, f"_{self.output_postfix}")
            d[self.path_key] = str(write_like(arr, write_meta, out))
        return d
