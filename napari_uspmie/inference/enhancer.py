"""Python API of the enhancer: ``load_enhancer()`` then ``Enhancer.enhance(array)``.

Example::

    from napari_uspmie import load_enhancer
    from napari_uspmie.io.readers import read_image
    from napari_uspmie.io.writers import write_like

    image, meta = read_image("ct_series/")          # (D, H, W) in HU
    enhancer = load_enhancer()                       # shipped bundle, device auto
    enhanced = enhancer.enhance(image)               # same shape, dtype and range
    write_like(enhanced, meta, "ct_series_enhanced")

Weights: ``models/model.pt`` of the bundle (a generator state dict, or a dict holding it under
``"model"``/``"generator_ab"``), a training checkpoint, or a TorchScript ``model.ts``. The
architecture comes from the checkpoint's ``"network_def_kwargs"``, else from
``model_config.json`` beside the weights, else from the shapes of the weights themselves, so
checkpoints of any width or depth load without editing configs.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_uspmie.errors import CheckpointError, InvalidImageError
from napari_uspmie.inference.channels import network_channels
from napari_uspmie.inference.depthwise_sum import to_depthwise_sum
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.inference.precision import cpu_has_fast_bf16
from napari_uspmie.inference.winograd import to_winograd
from napari_uspmie.io.intensity import IntensityMap
from napari_uspmie.models.networks import ResnetGenerator

__all__ = [
    "Enhancer",
    "compile_network",
    "load_enhancer",
    "pick_device",
    "load_generator_weights",
    "generator_state",
    "infer_generator_kwargs",
]

_CKPT_KEYS = ("generator_ab", "model", "state_dict", "network", "net")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, then Apple MPS, then CPU; anything else as given."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def infer_generator_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``ResnetGenerator`` kwargs that fit a state dict (norm: ``batch`` if it has running stats, else instance)."""
    try:
        stem = state["model.1.weight"]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
        convs = [k for k in state if k.endswith(".weight") and state[k].ndim == 4]
        last = max(convs, key=lambda k: int(k.split(".")[1]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"weights do not look like a ResNet generator (missing {e}).") from e
    return {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(state[last].shape[0]),
        "ngf": int(stem.shape[0]),
        "n_blocks": len(blocks),
        "norm": "batch" if any(k.endswith("running_mean") for k in state) else "instance",
    }


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e}).") from e


def generator_state(obj: Any, path: str | os.PathLike = "checkpoint") -> tuple[dict[str, torch.Tensor], dict | None]:
    """The generator's state dict inside a loaded checkpoint, and its ``network_def_kwargs`` if stored.

    Accepts a bare state dict, ``{"model": sd}`` (MONAI Label), a training checkpoint
    (``"generator_ab"``) and DistributedDataParallel's ``module.`` prefixes.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict or a checkpoint dict, got {type(obj).__name__}.")
    state = obj
    for key in _CKPT_KEYS:
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no weights found (keys: {sorted(obj)[:8]}).")
    return state, obj.get("network_def_kwargs")


def load_generator_weights(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Build the generator stored in ``path`` and load its weights (eval mode, on CPU).

    Args:
        path: a state dict / checkpoint ``.pt`` or a TorchScript file.

    Returns:
        ``(network, kwargs)``; ``kwargs`` is empty for TorchScript.

    Raises:
        CheckpointError: missing file, unreadable file, or weights that do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as load_error:  # TorchScript archives refuse torch.load; try them as such
        try:
            net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint or TorchScript file ({load_error}).") from None
        return net, {}
    state, kwargs = generator_state(obj, path)
    if kwargs is None:
        kwargs = _read_json(path.parent / "model_config.json")
    inferred = infer_generator_kwargs(state)
    kwargs = dict(kwargs or inferred)
    try:
        net = ResnetGenerator(**kwargs)
        net.load_state_dict(state)
    except (TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: weights do not fit ResnetGenerator({kwargs}); the weights look like {inferred}. "
            f"Fix model_config.json or the checkpoint's network_def_kwargs. ({str(e).splitlines()[0]})"
        ) from e
    return net.eval(), kwargs


def _bundle_defaults(bundle_dir: Path | None) -> dict[str, Any]:
    """Tiling and intensity settings from the bundle's ``inference.json`` (plain values only)."""
    cfg = _read_json(bundle_dir / "configs" / "inference.json") if bundle_dir else None
    keys = {"roi_size": "tile_size", "overlap": "overlap", "sw_batch_size": "batch_size", "percentiles": "percentiles"}
    out = {}
    for src, dst in keys.items():
        value = (cfg or {}).get(src)
        if isinstance(value, (int, float, list)) and not isinstance(value, bool):
            out[dst] = value
    return out


def compile_network(network: nn.Module, fast_layers: bool | None = None, bf16: bool = False) -> nn.Module:
    """``torch.compile`` for inference: static shapes, weights frozen into the graph as constants.

    Freezing lets Inductor pre-pack the convolution weights (oneDNN on CPU) and fuse the
    instance norms, ReLUs and paddings around them; it assumes the weights no longer change.
    Each new input shape compiles anew; past ``torch._dynamo.config.recompile_limit`` shapes
    (8 by default, counted per process) further shapes run eager, with the same results.

    Args:
        network: a module in evaluation mode; a TorchScript module is returned as it is (it has
            its own optimising compiler).
        fast_layers: rewrite layers for float32 CPU inference first: 3x3 stride-1 convolutions by
            Winograd F(4x4, 3x3) (:mod:`napari_uspmie.inference.winograd`; 4x fewer multiplications) and
            convolutions to one output channel as depthwise + sum
            (:mod:`napari_uspmie.inference.depthwise_sum`); results within a few 1e-5. ``None``: on when the
            network's weights are on the CPU (cuDNN picks its own algorithms) and it will not run
            under bfloat16 autocast (Winograd's transforms need float32 precision).
        bf16: the network will run under bfloat16 autocast.

    Returns:
        The compiled module (attributes such as ``in_channels`` still read through); the
        network passed in is left as it is.
    """
    if isinstance(network, torch.jit.ScriptModule):
        return network
    if fast_layers is None:
        fast_layers = not bf16 and all(p.device.type == "cpu" for p in network.parameters())
    if fast_layers:
        network = to_depthwise_sum(to_winograd(network))
    return torch.compile(network, dynamic=False, options={"freezing": True})


class Enhancer:
    """A loaded generator plus the settings to run it on numpy images.

    Args:
        network: the A->B generator (any ``nn.Module`` mapping [-1, 1] images to [-1, 1]).
        device: where it runs.
        tile_size: slices larger than this are tiled (sliding window with Gaussian blending).
        overlap: window overlap fraction.
        batch_size: slices or windows per network call.
        percentiles: intensity window for non-8-bit data.
        amp: float16 autocast on CUDA.
        bf16: bfloat16 autocast on CPU and CUDA, for speed (opt-in). On CPUs with AMX the shipped
            generator runs about 4x faster (compiled as well: up to 5x for the paper's); outputs
            differ from float32 by a few thousandths of the [-1, 1] range on average (see
            ``docs/benchmarks.md``). Without bf16 hardware it can be slower than float32.
        kwargs: the architecture (informational).
        compile: run the network through ``torch.compile`` (Inductor, weights frozen into the
            graph; on CPU in float32 with Winograd 3x3 convolutions and a depthwise + sum output
            layer, :func:`compile_network`).
            Each new input shape compiles first (seconds to tens of seconds on a CPU), then runs
            about 2x faster than eager (see ``docs/benchmarks.md``); results agree with eager
            fp32 to about 5e-5. Off by default: a one-off enhancement would spend longer compiling.
    """

    def __init__(
        self,
        network: nn.Module,
        device: str | torch.device | None = None,
        tile_size: int = 1024,
        overlap: float = 0.25,
        batch_size: int = 4,
        percentiles: Sequence[float] = (0.5, 99.5),
        amp: bool = True,
        bf16: bool = False,
        kwargs: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        self.device = pick_device(device)
        self.network = network.to(self.device).eval()
        self.compile = bool(compile)
        self.bf16 = bool(bf16)
        self._runner = compile_network(self.network, bf16=self.bf16) if self.compile else self.network
        self.tile_size, self.overlap, self.batch_size = int(tile_size), float(overlap), int(batch_size)
        self.percentiles = tuple(percentiles)
        self.amp = amp
        if self.bf16 and self.device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "bf16=True on a CPU without bfloat16 hardware (AMX or AVX-512 BF16): it is emulated and can be "
                "slower than float32; leave bf16 off on this machine.",
                stacklevel=2,
            )
        self.kwargs = dict(kwargs or {})
        self.in_channels, self.out_channels = network_channels(network)

    def __repr__(self) -> str:
        name = self.kwargs or type(self.network).__name__
        options = (", bf16" if self.bf16 else "") + (", compiled" if self.compile else "")
        return f"Enhancer({name}, device={self.device}, tile={self.tile_size}{options})"

    @staticmethod
    def _layout(array: np.ndarray, channel_axis: int | None, slice_axis: int) -> tuple[np.ndarray, tuple]:
        """``(N, H, W, C)`` view of ``array`` (slices first, channels last) and what undoes it."""
        if channel_axis is None and array.ndim in (3, 4) and array.shape[-1] in (3, 4):
            channel_axis = array.ndim - 1
        if channel_axis is not None:
            channel_axis %= array.ndim
            array = np.moveaxis(array, channel_axis, -1)
        spatial = array.ndim - (channel_axis is not None)
        if spatial not in (2, 3):
            raise InvalidImageError(f"cannot enhance an array of shape {array.shape}: expected 2D, RGB(A) or 3D.")
        if spatial == 3:
            slice_axis %= 3
            array = np.moveaxis(array, slice_axis, 0)
        else:
            array = array[None]
        if channel_axis is None:
            array = array[..., None]
        return array, (spatial, channel_axis, slice_axis)

    @staticmethod
    def _unlayout(result: np.ndarray, undo: tuple) -> np.ndarray:
        spatial, channel_axis, slice_axis = undo
        if channel_axis is None:
            result = result[..., 0]
        result = np.moveaxis(result, 0, slice_axis) if spatial == 3 else result[0]
        return result if channel_axis is None else np.moveaxis(result, -1, channel_axis)

    def enhance(
        self,
        array: np.ndarray,
        *,
        channel_axis: int | None = None,
        slice_axis: int = 0,
        tile_size: int | None = None,
        batch_size: int | None = None,
        progress: Callable[[int, int], Any] | None = None,
        cancel: Any = None,
        keep_range: bool = True,
    ) -> np.ndarray:
        """Enhance a 2D grey, 2D RGB(A) image or a 3D volume (slice by slice).

        Args:
            array: ``(H, W)``, ``(H, W, 3|4)``, ``(D, H, W)`` or a volume with a channel axis.
            channel_axis: colour axis; ``None`` takes a last axis of length 3 or 4 as colour.
            slice_axis: for volumes, the axis enhanced slice by slice (counted without the colour axis).
            tile_size: override of the tiling threshold / window (multiple of 4).
            batch_size: override of slices or windows per network call.
            progress: ``progress(done, total)`` after each network call; return ``False`` to cancel.
            cancel: object with ``is_set()`` (``threading.Event``) checked before each network call.
            keep_range: clip the result to the input's value range.

        Returns:
            The enhanced array: same shape, dtype and (with ``keep_range``) value range; alpha kept.

        Raises:
            InvalidImageError: NaN/Inf values, bad shape or channel count.
            EnhancementCancelled: cancelled.
        """
        array = np.asarray(array)
        if array.dtype.kind not in "biuf" or array.size == 0:
            raise InvalidImageError(f"cannot enhance an array of dtype {array.dtype} and shape {array.shape}.")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise InvalidImageError(f"image holds {bad} NaN/Inf values; replace them (e.g. with the background value).")
        work, undo = self._layout(array, channel_axis, slice_axis)
        c = work.shape[-1]
        colour = {1: 1, 2: 1, 3: 3, 4: 3}.get(c)
        if colour is None:
            raise InvalidImageError(f"cannot enhance {c}-channel images; expected grey, RGB or RGBA.")
        image = work[..., :colour]
        mapping = IntensityMap.fit(image, self.percentiles)
        x = torch.from_numpy(np.ascontiguousarray(mapping.to_unit(image).transpose(0, 3, 1, 2)))
        inferer = EnhancementInferer(
            roi_size=tile_size or self.tile_size,
            overlap=self.overlap,
            batch_size=batch_size or self.batch_size,
            device=self.device,
            amp=self.amp,
            bf16=self.bf16,
            progress=progress,
            cancel=cancel,
        )
        y = inferer(x, self._runner).numpy().transpose(0, 2, 3, 1)
        result = np.empty_like(work)
        result[..., :colour] = mapping.from_unit(y, image, keep_range)
        result[..., colour:] = work[..., colour:]  # alpha unchanged
        return self._unlayout(result, undo)


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
    from napari_uspmie.bundle.location import bundle_path

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
                "docs/README.md) or pass checkpoint=."
            )
    network, kwargs = load_generator_weights(weights)
    settings = {**_bundle_defaults(bundle), **options}
    return Enhancer(network, device=device, kwargs=kwargs, **settings)
