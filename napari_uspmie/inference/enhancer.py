"""Python API of the enhancer: ``load_enhancer()`` then ``Enhancer.enhance(array)``.

Example::

    from napari_uspmie import load_enhancer
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.io.writers import write_like

    image, meta = read_image("ct_series/")          # (D, H, W) in HU
    enhancer = load_enhancer()                       # shipped bundle, device auto
    enhanced = enhancer.enhance(image)               # same shape, dtype and range
    write_like(enhanced, meta, "ct_series_enhanced")

Weights: ``models/model.pt`` of the bundle, a training checkpoint, or a TorchScript ``model.ts``,
loaded by :func:`napari_uspmie.inference.checkpoint.load_generator` (the package's one loader).
The steps around the network are those of :mod:`napari_uspmie.inference.pipeline`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_uspmie.errors import CheckpointError, DeviceError
from napari_uspmie.inference.channels import network_channels
from napari_uspmie.inference.checkpoint import load_generator
from napari_uspmie.inference.compilation import compile_layers, compile_network, eager_layers
from napari_uspmie.inference.compiled_cache import CompiledGenerator, cached_runner
from napari_uspmie.inference.geometry import resample_factors, resampled_enhancement
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.inference.margin import DEFAULT_MARGIN
from napari_uspmie.inference.pipeline import (
    check_values,
    colour_channels,
    from_slices,
    guess_channel_axis,
    restore_values,
    to_slices,
)
from napari_uspmie.inference.precision import cpu_has_fast_bf16
from napari_uspmie.inference.scope import ModelScope, check_scope, read_metadata
from napari_uspmie.io.intensity import DEFAULT_PERCENTILES, IntensityMap
from napari_uspmie.metric.structure_check import StructureThresholds

__all__ = ["Enhancer", "load_enhancer", "pick_device", "bundle_settings"]

#: bundle settings the enhancer takes from ``inference.json``: the id now -> the id it replaced
_SETTINGS = {
    "tile_size": "roi_size",
    "overlap": None,
    "batch_size": "sw_batch_size",
    "percentiles": None,
    "margin": None,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, then Apple MPS, then CPU; anything else as given, if present.

    Raises:
        DeviceError: an unknown device kind, or a device this machine does not have.
    """
    if device is not None and str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from e
        if chosen.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise DeviceError(f"device {device!r}: no CUDA GPU is available here; use auto or cpu.")
            if chosen.index is not None and chosen.index >= count:
                raise DeviceError(f"device {device!r}: this machine has {count} CUDA GPU(s), numbered from 0.")
        elif chosen.type == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise DeviceError(f"device {device!r}: Apple MPS is not available here; use auto or cpu.")
        elif chosen.type != "cpu":
            raise DeviceError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bundle_settings(bundle_dir: Path | None) -> dict[str, Any]:
    """Tiling and intensity settings of a bundle's ``inference.json`` (plain values only).

    The ids are the enhancer's own names; a config still using a replaced id (``roi_size``,
    ``sw_batch_size``) is read too.

    Raises:
        CheckpointError: the config exists but is not readable JSON.
    """
    import json

    path = bundle_dir / "configs" / "inference.json" if bundle_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e}).") from e
    out = {}
    for name, old in _SETTINGS.items():
        for key in (old, name):
            value = config.get(key) if key else None
            if isinstance(value, (int, float, list)) and not isinstance(value, bool):
                out[name] = value
    return out


class Enhancer:
    """A loaded generator plus the settings to run it on numpy images.

    Args:
        network: the A->B generator (any ``nn.Module`` mapping [-1, 1] images to [-1, 1]).
        device: where it runs.
        tile_size: slices larger than this are tiled (sliding window with Gaussian blending).
        overlap: window overlap fraction.
        batch_size: slices or windows per network call.
        percentiles: intensity window for non-8-bit data.
        margin: pixels of context around each slice in the network (reflected, or a frame of the
            minimum where the field of view cuts through the anatomy, decided once per volume),
            cropped off after, so that the generator's edge marks fall outside the image; 0: none.
        amp: float16 autocast on CUDA.
        bf16: bfloat16 autocast on CPU and CUDA, for speed (opt-in): outputs differ from float32
            by a few thousandths of the [-1, 1] range; without bf16 hardware (AMX or AVX-512 BF16)
            it can be slower than float32 (see ``docs/benchmarks.md``).
        architecture: the ``ResnetGenerator`` arguments of ``network`` (informational).
        compile: run the network through ``torch.compile`` (Inductor, weights frozen into the
            graph; on CPU in float32 with Winograd 3x3 convolutions in layers of 128 channels or
            more and a depthwise + sum output layer, :func:`compile_network`). Each new input shape
            compiles first (seconds to tens of seconds on a CPU), then runs faster than eager (see
            ``docs/benchmarks.md``);
            results agree with eager fp32 to about 5e-5. Off by default: a one-off enhancement
            would spend longer compiling.
        cache_compiled: on the CPU in float32, run the generator's compiled library from the per-user
            cache when there is one (shapes stay dynamic; results agree with eager to about 1e-5), and
            build it in a background process when there is not
            (:mod:`napari_uspmie.inference.compiled_cache`; needs ``architecture``). The first run on
            a machine runs eagerly; ``NAPARI_USPMIE_COMPILED_CACHE=off`` turns the cache off everywhere.
        scope: what the model was trained on (modality, channels, pixel size); inputs outside it
            are refused unless allowed, and slices of known pixel size are enhanced at the model's.
            Default: unknown (nothing refused or resampled).
        structure_thresholds: the structure guard's thresholds for this model (default: the guard's).
    """

    def __init__(
        self,
        network: nn.Module,
        device: str | torch.device | None = None,
        tile_size: int = 1024,
        overlap: float = 0.25,
        batch_size: int = 4,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        margin: int = DEFAULT_MARGIN,
        amp: bool = True,
        bf16: bool = False,
        architecture: dict[str, Any] | None = None,
        compile: bool = False,
        cache_compiled: bool = True,
        scope: ModelScope | None = None,
        structure_thresholds: StructureThresholds | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.scope = scope or ModelScope()
        self.structure_thresholds = structure_thresholds or StructureThresholds()
        self.network = network.to(self.device).eval()
        self.compile = bool(compile)
        self.bf16 = bool(bf16)
        self.architecture = dict(architecture or {})
        #: the eager module behind ``runner`` (layers rewritten when compiled for the CPU): torch's
        #: compiled wrapper keeps it only under a private name
        self.compiled_from = compile_layers(self.network, bf16=self.bf16) if self.compile else self.network
        #: what runs: with ``compile`` the network compiled in this process; else its cached compiled
        #: library when ``cache_compiled`` finds one; else ``network`` as the CPU runs it eagerly
        #: (:func:`eager_layers`: layers rewritten into faster forms of the same arithmetic)
        if self.compile:
            self.runner = compile_network(self.compiled_from, fast_layers=False)
        elif cache_compiled:
            self.runner = cached_runner(self.network, self.architecture, self.device, bf16=self.bf16)
        else:
            self.runner = eager_layers(self.network, bf16=self.bf16)
        self.tile_size, self.overlap, self.batch_size = int(tile_size), float(overlap), int(batch_size)
        self.percentiles = tuple(percentiles)
        self.margin = int(margin)
        self.amp = amp
        if self.bf16 and self.device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "bf16=True on a CPU without bfloat16 hardware (AMX or AVX-512 BF16): it is emulated and can be "
                "slower than float32; leave bf16 off on this machine.",
                stacklevel=2,
            )
        self.in_channels, self.out_channels = network_channels(network)

    def __repr__(self) -> str:
        name = self.architecture or type(self.network).__name__
        cached = isinstance(self.runner, CompiledGenerator)
        options = (", bf16" if self.bf16 else "") + (", compiled" if self.compile else ", cached compiled" * cached)
        return f"Enhancer({name}, device={self.device}, tile={self.tile_size}{options})"

    def enhance(
        self,
        array: np.ndarray,
        *,
        channel_axis: int | None | str = "auto",
        slice_axis: int = 0,
        tile_size: int | None = None,
        batch_size: int | None = None,
        progress: Callable[[int, int], Any] | None = None,
        cancel: Any = None,
        keep_range: bool = True,
        spacing: Sequence[float] | None = None,
        modality: str | None = None,
        allow_out_of_scope: bool = False,
        source: str = "image",
        record: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Enhance a 2D grey, 2D RGB(A) image or a 3D volume (slice by slice).

        Args:
            array: ``(H, W)``, ``(H, W, 3|4)``, ``(D, H, W)`` or a volume with a channel axis.
            channel_axis: colour axis; ``None`` for grey images and volumes; ``"auto"`` takes a
                last axis of length 3 or 4 as colour (pass the reader's ``meta["channel_axis"]``
                for files, so a volume 3 or 4 voxels wide stays a volume).
            slice_axis: for volumes, the axis enhanced slice by slice (counted without the colour axis).
            tile_size: override of the tiling threshold / window (multiple of 4).
            batch_size: override of slices or windows per network call.
            progress: ``progress(done, total)`` after each network call; return ``False`` to cancel.
            cancel: object with ``is_set()`` (``threading.Event``) checked before each network call.
            keep_range: clip the result to the input's value range.
            spacing: in-plane pixel size ``(row, column)`` in mm of the slices (from the file's
                geometry or the layer's scale); with the model's pixel size known, slices are
                enhanced at the model's pixel size (:mod:`napari_uspmie.inference.geometry`).
                ``None``: unknown, enhanced as they are.
            modality: the input's DICOM modality code (header or declaration), for the scope check.
            allow_out_of_scope: enhance inputs outside the model's scope instead of refusing them.
            source: the input's name in messages.
            record: a dict that receives what was done: ``scope_problems`` (reasons the input is
                out of scope, when allowed), ``resample_factors`` (``None``: enhanced as it is),
                ``spacing``.

        Returns:
            The enhanced array: same shape, dtype and (with ``keep_range``) value range; alpha kept.

        Raises:
            InvalidImageError: NaN/Inf values, bad shape or channel count, or a network output
                that is not finite.
            EnhancementCancelled: cancelled.
            OutOfScopeError: outside the model's scope and not allowed.
        """
        array = check_values(array)
        if channel_axis == "auto":
            channel_axis = guess_channel_axis(array)
        work, layout = to_slices(array, channel_axis, slice_axis)
        colour = colour_channels(work.shape[-1])
        image = work[..., :colour]
        problems = check_scope(
            source,
            self.scope,
            channels=colour,
            modality=modality,
            spacing=spacing,
            allow_out_of_scope=allow_out_of_scope,
        )
        factors = resample_factors(spacing, self.scope.pixel_spacing_mm)
        if record is not None:
            record.update(scope_problems=problems, resample_factors=factors, spacing=spacing)
        mapping = IntensityMap.fit(image, self.percentiles)
        x = torch.from_numpy(np.ascontiguousarray(mapping.to_unit(image).transpose(0, 3, 1, 2)))
        inferer = EnhancementInferer(
            tile_size=tile_size or self.tile_size,
            overlap=self.overlap,
            margin=self.margin,
            batch_size=batch_size or self.batch_size,
            device=self.device,
            amp=self.amp,
            bf16=self.bf16,
            progress=progress,
            cancel=cancel,
        )

        def run(t: torch.Tensor) -> torch.Tensor:
            # large slices are streamed layer by layer, which walks the eager network's layers
            network = self.network if inferer.tiles(t.shape) else self.runner
            # given as one volume, so that its slices share their margin's context
            return inferer(t.permute(1, 0, 2, 3)[None], network)[0].permute(1, 0, 2, 3)

        y = resampled_enhancement(x, factors, run).numpy().transpose(0, 2, 3, 1)
        return from_slices(restore_values(y, work, mapping, keep_range, channel_axis=-1), layout)


def load_enhancer(
    bundle_dir: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Enhancer:
    """Load the enhancer of a bundle (default: the one shipped with the package) or of a checkpoint.

    Args:
        bundle_dir: MONAI bundle folder; its ``models/model.pt`` (else ``model.ts``) and the
            tiling settings of ``configs/inference.json`` are used.
        checkpoint: weights file (or folder holding ``model.pt``) overriding the bundle's.
        device: ``"auto"``/``None`` (CUDA, MPS, CPU), or a device name.
        options: overrides of :class:`Enhancer` settings (``tile_size``, ``overlap``, ``batch_size``,
            ``percentiles``, ``amp``, ``bf16``, ``compile``).

    Raises:
        CheckpointError: no weights found, or weights that do not load.
        FileNotFoundError: no bundle found when ``bundle_dir`` is omitted.
    """
    from napari_uspmie.io.packaged_data import bundle_path

    bundle = Path(bundle_dir) if bundle_dir is not None else (None if checkpoint is not None else bundle_path())
    if checkpoint is not None:
        weights = Path(checkpoint)
        if weights.is_dir():
            weights = weights / "model.pt"
    else:
        models = bundle / "models"
        weights = next((p for p in (models / "model.pt", models / "model.ts") if p.is_file()), models / "model.pt")
        if not weights.is_file():
            raise CheckpointError(
                f"{models}: no trained weights (model.pt or model.ts). Train the model (see the bundle's "
                "docs/README.md) or give trained weights (--checkpoint on the command line, checkpoint= in Python)."
            )
    network, architecture = load_generator(weights)
    metadata = read_metadata(bundle)
    try:
        scope, thresholds = ModelScope.from_metadata(metadata), StructureThresholds.from_metadata(metadata)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{bundle}: unreadable model scope or thresholds in configs/metadata.json ({e}).") from e
    settings = {"scope": scope, "structure_thresholds": thresholds, **bundle_settings(bundle), **options}
    return Enhancer(network, device=device, architecture=architecture, **settings)
