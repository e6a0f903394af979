"""A MONAI inferer that runs a 2D generator on 2D images and, slice by slice, on volumes.

``EnhancementInferer()(inputs, network)`` takes ``(B, C, H, W)`` or ``(B, C, D, H, W)`` tensors in
the network's [-1, 1] range (volumes with slices on the first spatial axis) and returns the
network's output with the same shape (channels as the input: a grey model on RGB or an RGB
model on grey is adapted by :class:`napari_uspmie.inference.channels.ChannelAdapter`).

- Slices are padded (reflect) to a multiple of 4 and at least 16 pixels, as the ResNet
  generator needs, then cropped back.
- Slices up to ``tile_size`` go through the network whole, ``batch_size`` slices at a time (fewer if
  that exceeds ``max_pixels`` per call; on a CPU, by default, fewer still so that the allocator
  reuses a call's activations and the cache holds them, see :func:`pixels_per_call`): this is
  what the paper does at test time (instance norm then sees the whole image).
- Larger slices of a generator that can be streamed (:mod:`napari_uspmie.inference.layer_stream`:
  every ResNet generator) run layer by layer over the whole slice, convolutions in bands of rows
  on the device, instance norms with the whole slice's statistics: the whole-slice result, without
  tile seams, while the device holds one band; the layers' outputs stay on the inputs' device.
  Other networks go through MONAI's ``sliding_window_inference`` with ``overlap`` and Gaussian
  blending, ``batch_size`` windows at a time, each window normalised on its own.
- ``progress(done, total)`` is called after each network call (units: slices or windows);
  returning ``False`` from it, or setting ``cancel`` (anything with ``is_set()``, e.g. a
  ``threading.Event``), raises :class:`napari_uspmie.errors.EnhancementCancelled` before the
  next call.
- ``amp=True`` runs float16 autocast on CUDA devices (ignored elsewhere); ``bf16=True`` runs
  bfloat16 autocast on CPU or CUDA instead (opt-in: faster on CPUs with AMX, results differ from
  float32 by a few thousandths on average; see :mod:`napari_uspmie.inference.precision`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, sliding_window_inference
from torch import nn

from napari_uspmie.errors import EnhancementCancelled, SettingError
from napari_uspmie.inference.channels import ChannelAdapter, network_channels
from napari_uspmie.inference.geometry import resample_factors_of, resampled_enhancement
from napari_uspmie.inference.layer_stream import LayerStream, convolution_layers, streamable
from napari_uspmie.inference.margin import add_margin
from napari_uspmie.inference.precision import autocast_for
from napari_uspmie.metric.cpu_share import shared_core_threads

__all__ = [
    "EnhancementInferer",
    "pad_for_network",
    "pixels_per_call",
    "mark_compiled",
    "is_marked_compiled",
]

ProgressFn = Callable[[int, int], Any]

# Bounds a call's activations in memory on any device.
MAX_PIXELS = 2**21
# On a CPU large activations cost twice: glibc maps each tensor above its threshold (at most 32 MiB)
# afresh and unmaps it when freed, so every call page-faults its memory in again, and a layer's
# output that outgrows the cache goes to memory before the next layer reads it. On the ResNet
# generators the time per image grew 1.3-1.9x once the widest full-resolution activation of a call
# passed about 16 MiB compiled, 8 MiB eager (docs/benchmarks_analysis.md), so CPU calls are cut to
# that size. Eager layers allocate more intermediate tensors than compiled ones, which fuse them.
CPU_ACTIVATION_BYTES = {"compiled": 2**24, "eager": 2**23}


# torch's common base of these is private
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _first_convolution_channels(network: nn.Module) -> int | None:
    """Output channels of the first convolution in ``network`` (eager or TorchScript), if any."""
    for module in network.modules():
        if isinstance(module, _CONVOLUTIONS):
            return module.out_channels
        if getattr(module, "original_name", None) in ("Conv2d", "Conv3d"):  # scripted or traced
            return int(module.weight.shape[0])
    return None


def pixels_per_call(network: nn.Module | Callable[..., torch.Tensor], device: torch.device | str) -> int:
    """Pixels per network call, at most, for ``network`` on ``device`` when none are given.

    On a CPU: as many as keep the output of the network's first convolution (its widest
    full-resolution activation, in a ResNet or U-Net generator) within 16 MiB of float32 when it
    runs through ``torch.compile``, 8 MiB when eager, so a batch of large slices runs as several
    calls whose activations the allocator reuses (instead of faulting fresh pages in) and the cache
    holds; outputs are the same (every image is normalised on its own). Elsewhere, or when no
    convolution is found in the network: ``MAX_PIXELS``.

    Args:
        network: the generator (compiled modules and :class:`ChannelAdapter` are looked through;
            networks compiled by ``compile_network`` get the compiled budget).
        device: where it runs.

    Returns:
        A pixel count, at least one 128x128 image's worth and at most ``MAX_PIXELS``.
    """
    if torch.device(device).type != "cpu" or not isinstance(network, nn.Module):
        return MAX_PIXELS
    channels = _first_convolution_channels(network)
    if channels is None:
        return MAX_PIXELS
    per_pixel = channels * torch.finfo(torch.float32).bits // 8
    compiled = any(is_marked_compiled(module) for module in network.modules())
    budget = CPU_ACTIVATION_BYTES["compiled" if compiled else "eager"]
    return max(128 * 128, min(MAX_PIXELS, budget // per_pixel))


#: attribute :func:`napari_uspmie.inference.compilation.compile_network` sets on what it compiles
COMPILED_MARK = "uspmie_compiled"


def mark_compiled(module: nn.Module) -> nn.Module:
    """Tag a compiled network so that :func:`pixels_per_call` gives it the compiled budget."""
    setattr(module, COMPILED_MARK, True)
    return module


def is_marked_compiled(module: nn.Module) -> bool:
    """Whether ``module`` was tagged by :func:`mark_compiled` (torch's own wrapper has no public flag)."""
    return vars(module).get(COMPILED_MARK, False) is True


def pad_for_network(x: torch.Tensor, multiple: int = 4, min_size: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(N, C, H, W)`` at the bottom/right to a multiple of ``multiple`` and at least ``min_size``.

    Returns:
        The padded tensor and the original ``(H, W)``.
    """
    h, w = x.shape[-2:]
    th = max(min_size, math.ceil(h / multiple) * multiple)
    tw = max(min_size, math.ceil(w / multiple) * multiple)
    if (th, tw) == (h, w):
        return x, (h, w)
    # reflection needs the pad to be smaller than the size; tiny images are replicated instead
    mode = "reflect" if th - h < h and tw - w < w else "replicate"
    return F.pad(x, (0, tw - w, 0, th - h), mode=mode), (h, w)


def _windows(size: int, roi: int, overlap: float) -> int:
    """Windows along one axis, as MONAI's ``dense_patch_slices`` counts them."""
    if roi >= size:
        return 1
    interval = max(int(roi * (1 - overlap)), 1)
    return math.ceil((size - roi) / interval) + 1


class EnhancementInferer(Inferer):
    """Whole-slice or tiled inference of a 2D generator on 2D images and volumes.

    Args:
        tile_size: largest slice side run whole; larger slices are tiled with this window.
        overlap: fraction of overlap between windows.
        mode: window blending, ``"gaussian"`` or ``"constant"``.
        sigma_scale: Gaussian sigma as a fraction of the window.
        batch_size: slices (whole mode) or windows (tiled mode) per network call, at most.
        max_pixels: pixels per network call, at most (the batch shrinks for large slices or windows,
            down to one), which bounds the activations' memory whatever ``batch_size`` says.
            ``None``: :func:`pixels_per_call` (smaller calls on a CPU, ``MAX_PIXELS`` elsewhere).
        device: where the network runs (default: the inputs' device); outputs stay on the inputs' device.
        amp: float16 autocast on CUDA.
        bf16: bfloat16 autocast on CPU and CUDA (takes precedence over ``amp``).
        progress: ``progress(done, total)``; returning ``False`` cancels.
        cancel: object with ``is_set()``; when set, the next step cancels.
        margin: pixels of context (reflected, or a frame where the field of view cuts through the
            anatomy) around each slice while it goes through the network, cropped off after
            (:func:`napari_uspmie.inference.margin.add_margin`); 0: none.
        stream: run large slices layer by layer when the network allows it (whole-slice result);
            ``False`` tiles them with a sliding window, each window normalised on its own (the
            paper's code has no tiling). Streaming needs the eager network, not a compiled one.
    """

    def __init__(
        self,
        tile_size: int = 1024,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        batch_size: int = 4,
        max_pixels: int | None = None,
        device: torch.device | str | None = None,
        amp: bool = True,
        bf16: bool = False,
        progress: ProgressFn | None = None,
        cancel: Any = None,
        stream: bool = True,
        margin: int = 0,
    ) -> None:
        super().__init__()
        if tile_size < 16 or tile_size % 4:
            raise SettingError(f"tile_size must be a multiple of 4 and at least 16, got {tile_size}.")
        if not 0 <= overlap < 1:
            raise SettingError(f"overlap must be in [0, 1), got {overlap}.")
        self.tile_size = int(tile_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.sigma_scale = sigma_scale
        self.batch_size = max(int(batch_size), 1)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.device = torch.device(device) if device is not None else None
        self.amp = amp
        self.bf16 = bf16
        self.progress = progress
        self.cancel = cancel
        self.stream = bool(stream)
        if margin < 0:
            raise SettingError(f"margin must be 0 or more pixels, got {margin}.")
        self.margin = int(margin)

    def network_size(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        """``(H, W)`` of the slices of an input of this shape as the network gets them (margin and padding)."""
        h, w = (max(16, math.ceil((s + 2 * self.margin) / 4) * 4) for s in shape[-2:])
        return h, w

    def tiles(self, shape: torch.Size | tuple[int, ...]) -> bool:
        """Whether slices of an input of this shape are tiled or streamed (larger than ``tile_size`` once
        padded to a multiple of 4; the margin does not count)."""
        h, w = (max(16, math.ceil(s / 4) * 4) for s in shape[-2:])
        return h > self.tile_size or w > self.tile_size

    def steps(self, shape: torch.Size | tuple[int, ...], layers: int = 0) -> int:
        """Progress units for an input of this shape (what ``progress`` counts to).

        Units are slices, windows, or with ``layers`` (the convolution layers of a streamed
        network) convolution layers of streamed slices.
        """
        n = math.prod(shape[:1] + tuple(shape[2:-2]))
        h, w = self.network_size(shape)
        if not self.tiles(shape):
            return n
        if layers:
            return n * layers
        rh, rw = min(self.tile_size, h), min(self.tile_size, w)
        return n * _windows(h, rh, self.overlap) * _windows(w, rw, self.overlap)

    def images_per_call(self, pixels: int, limit: int | None = None) -> int:
        """Images per network call: ``batch_size``, fewer when they would exceed the pixel limit.

        ``limit`` defaults to ``max_pixels``, or ``MAX_PIXELS`` when that is ``None``.
        """
        limit = limit or self.max_pixels or MAX_PIXELS
        return max(1, min(self.batch_size, limit // max(pixels, 1)))

    def _check(self, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise EnhancementCancelled("enhancement cancelled.")
        if self.progress is not None and self.progress(done, total) is False:
            raise EnhancementCancelled("enhancement cancelled.")

    def _forward(self, net: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        with torch.no_grad(), autocast_for(device, self.amp, self.bf16):
            return net(x).float()

    def _stream(
        self,
        net: Callable[..., torch.Tensor],
        network: nn.Module,
        x: torch.Tensor,
        device: torch.device,
        limit: int,
        layer_done: Callable[[], None],
    ) -> torch.Tensor:
        """One large slice, layer by layer (``net`` is ``network`` or its channel adapter)."""
        channels = _first_convolution_channels(network) or 1
        stream = LayerStream(
            device,
            band_elements=limit * channels,
            autocast=lambda: autocast_for(device, self.amp, self.bf16),
            layer_done=layer_done,
        )
        run = lambda t: stream(network, t)  # noqa: E731
        y = net.run(x, run) if isinstance(net, ChannelAdapter) else run(x)
        return y

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """Enhance ``inputs`` (``(B, C, H, W)`` or ``(B, C, D, H, W)``) with ``network``.

        Raises:
            EnhancementCancelled: cancelled through ``progress`` or ``cancel``.
            ValueError: wrong number of dimensions or unsupported channels.
        """
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W) inputs, got shape {tuple(inputs.shape)}.")
        shape = inputs.shape
        c = shape[1]
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        group = shape[2] if x.ndim == 5 else 1  # a volume's slices share their margin's context
        if x.ndim == 5:  # slices into the batch
            x = x.permute(0, 2, 1, 3, 4).reshape(-1, c, *shape[-2:])
        factors = resample_factors_of(inputs)
        with shared_core_threads(self.device or x.device):
            out = resampled_enhancement(x.float(), factors, lambda t: self._slices(t, network, group))
        if len(shape) == 5:
            out = out.reshape(shape[0], shape[2], out.shape[1], *shape[-2:]).permute(0, 2, 1, 3, 4)
        return out.contiguous()

    def _slices(self, x: torch.Tensor, network: Callable[..., torch.Tensor], group: int = 1) -> torch.Tensor:
        """Enhance ``(N, C, H, W)`` slices (volumes of ``group`` consecutive slices): whole, streamed or in windows."""
        shape, c = x.shape, x.shape[1]
        net = network
        if isinstance(network, nn.Module) and network_channels(network)[0] != c:
            net = ChannelAdapter(network, c)
        h, w = x.shape[-2:]
        m = self.margin
        xp, _ = pad_for_network(add_margin(x, m, group))
        hp, wp = xp.shape[-2:]
        device = self.device or x.device
        limit = self.max_pixels or pixels_per_call(network, device)
        streamed = self.stream and isinstance(network, nn.Module) and streamable(network)
        total, done = self.steps(shape, convolution_layers(network) if streamed else 0), 0
        out: torch.Tensor | None = None
        self._check(done, total)
        if not self.tiles(shape):
            batch = self.images_per_call(hp * wp, limit)
            for start in range(0, xp.shape[0], batch):
                y = self._forward(net, xp[start : start + batch], device).to(x.device)
                out = y.new_empty((xp.shape[0], *y.shape[1:])) if out is None else out
                out[start : start + y.shape[0]] = y
                done += y.shape[0]
                self._check(done, total)
        elif streamed:
            counter = {"done": done}

            def layer_done() -> None:
                counter["done"] += 1
                self._check(counter["done"], total)

            out = torch.cat(
                [self._stream(net, network, xp[n : n + 1], device, limit, layer_done) for n in range(xp.shape[0])]
            )
        else:
            roi = (min(self.tile_size, hp), min(self.tile_size, wp))
            counter = {"done": done}

            def predictor(window: torch.Tensor) -> torch.Tensor:
                y = self._forward(net, window, device)
                counter["done"] += window.shape[0]
                self._check(counter["done"], total)
                return y

            results = []
            for n in range(xp.shape[0]):
                results.append(
                    sliding_window_inference(
                        xp[n : n + 1],
                        roi,
                        self.images_per_call(roi[0] * roi[1], limit),
                        predictor,
                        overlap=self.overlap,
                        mode=self.mode,
                        sigma_scale=self.sigma_scale,
                        sw_device=device,
                        device=x.device,
                    )
                )
            out = torch.cat(results)
        return out[..., m : m + h, m : m + w]
