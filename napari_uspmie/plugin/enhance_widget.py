"""napari dock widget "Enhance (LaMEGAN)": run the enhancer on an image layer without freezing napari.

The model is the bundle shipped with the package, another bundle folder, or a checkpoint
file (loaded with ``torch.load(..., weights_only=True)``, so it cannot run code). A bundle's
configs *can* run code, so the widget asks before loading any bundle other than the shipped
one (once per folder and session).

The enhancement runs in a napari thread worker. Progress (slices or tiles) goes to a napari
progress bar, whose cancel button and the widget's own cancel button stop the run before
the next network call. While it runs, torch uses one thread fewer than the machine has, so
the GUI thread keeps a core. The result is added as ``"<layer> enhanced"`` with the source's
scale, translate, rotate, shear, affine, units, axis labels, metadata and contrast limits,
so it lies exactly over the source and saves back through the same headers. Every failure
becomes a napari notification.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox, create_widget

from napari_uspmie.plugin.layers import (
    JobOutcome,
    describe_exception,
    device_choices,
    image_kind,
    layer_geometry,
    layer_metadata,
    notify_error,
    notify_info,
)

if TYPE_CHECKING:
    import napari

__all__ = ["EnhanceWidget", "worker_threads"]

MODEL_CHOICES = [("bundled default", "bundled"), ("bundle folder", "bundle"), ("checkpoint file", "checkpoint")]


def worker_threads() -> int:
    """Torch threads for a run from the GUI: all cores but one, so the event loop keeps a core."""
    return max(1, (os.cpu_count() or 2) - 1)


class _Cancel:
    """Cancellation flag for the enhancer (``is_set()``): the cancel buttons set it, and a
    worker that napari asks to quit (viewer closing) counts as cancelled too."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.worker: Any = None

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set() or bool(self.worker is not None and self.worker.abort_requested)


def _progress_bar(desc: str, on_cancel):
    """A napari progress bar (activity dock) whose cancel button calls ``on_cancel``."""
    from napari.utils import cancelable_progress

    class _Bar(cancelable_progress):
        def cancel(self) -> None:
            super().cancel()
            on_cancel()

    return _Bar(total=0, desc=desc)


def _relay():
    """A QObject whose signal carries ``(done, total)`` from the worker thread to the GUI thread."""
    from qtpy.QtCore import QObject, Signal

    class _Relay(QObject):
        progressed = Signal(int, int)

    return _Relay()


def _enhance_job(enhancer, load_args: dict, data: Any, options: dict, progress, cancel: _Cancel) -> JobOutcome:
    """Worker-thread body: load the model if needed, enhance, hand back result or failure."""
    import torch

    from napari_uspmie.errors import EnhancementCancelled

    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, worker_threads()))
    start = time.perf_counter()
    try:
        if enhancer is None:
            from napari_uspmie.inference.enhancer import load_enhancer

            enhancer = load_enhancer(**load_args)
        array = np.asarray(data)  # dask/zarr layers are read here, off the GUI thread
        result = enhancer.enhance(array, progress=progress, cancel=cancel, **options)
        return JobOutcome(value=(result, enhancer, time.perf_counter() - start))
    except EnhancementCancelled:
        return JobOutcome(cancelled=True, value=(None, enhancer, time.perf_counter() - start))
    except Exception as exc:  # reported in the GUI thread by _on_returned
        return JobOutcome(error=exc, value=(None, enhancer, 0.0))
    finally:
        torch.set_num_threads(previous)


def _bf16_tooltip() -> str:
    from napari_uspmie.inference.precision import cpu_bf16_flags

    flags = cpu_bf16_flags()
    hardware = (
        f"This CPU has bfloat16 hardware ({', '.join(flags)}): expect about 2-3x faster on CPU."
        if flags
        else "This CPU has no bfloat16 hardware (AMX / AVX-512 BF16): on CPU it may be slower; leave it off."
    )
    return (
        "Run the network in bfloat16 instead of float32. Results differ slightly (about 0.1 grey level on "
        f"average in 8-bit images). {hardware}"
    )


def _can_compile() -> bool:
    """``torch.compile`` builds C++ kernels with g++ on CPU (Triton kernels on CUDA)."""
    import torch

    return shutil.which("g++") is not None or torch.cuda.is_available()


_COMPILE_TIP = (
    "Run the network through torch.compile (on CPU with faster forms of its convolutions). The first run per "
    "slice size compiles for a few seconds; later slices of that size run about 2x faster, with "
    "the same results to 1e-4. Worth it for volumes and repeated runs."
)


class EnhanceWidget(Container):
    """Dock widget: enhance the chosen image layer (2D, RGB(A) or 3D) with LaMEGAN.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image

        super().__init__()
        self._viewer = napari_viewer
        self._image = create_widget(annotation=Image, name="image", label="image")
        self._model = ComboBox(name="model", label="model", choices=MODEL_CHOICES, value="bundled")
        self._path = FileEdit(name="model_path", label="path", mode="r", filter="*.pt *.pth *.ts")
        self._path.visible = False
        self._device = ComboBox(name="device", label="device", choices=device_choices(), value="auto")
        self._slice_axis = SpinBox(name="slice_axis", label="slice axis (3D)", value=0, min=0, max=2)
        self._slice_axis.tooltip = "Volumes are enhanced slice by slice along this axis (0: the first, e.g. axial)."
        self._tile = SpinBox(name="tile_size", label="tile size", value=0, min=0, max=8192, step=64)
        self._tile.tooltip = "Slices larger than this are enhanced in overlapping tiles (0: the bundle's default)."
        self._bf16 = CheckBox(name="bf16", text="fast bfloat16 (approximate)", value=False)
        self._bf16.tooltip = _bf16_tooltip()
        self._compile = CheckBox(name="compile", text="compile (faster for volumes)", value=False)
        self._compile.enabled = _can_compile()
        self._compile.tooltip = _COMPILE_TIP if self._compile.enabled else "Needs a C++ compiler (g++) on CPU."
        self._run = PushButton(name="enhance_button", text="Enhance")
        self._cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._status = Label(name="status", label="", value="")
        self.extend(
            [
                self._image,
                self._model,
                self._path,
                self._device,
                self._slice_axis,
                self._tile,
                self._bf16,
                self._compile,
                self._run,
                self._cancel_button,
                self._status,
            ]
        )
        self._model.changed.connect(self._on_model_changed)
        self._image.changed.connect(self._on_image_changed)
        self._run.changed.connect(self.run)
        self._cancel_button.changed.connect(self.cancel)
        self._enhancers: dict[tuple, Any] = {}  # loaded models, reused across runs
        self._trusted: set[Path] = set()  # bundle folders the user agreed to load
        self._busy = False
        self._running = False  # between start and the result
        self._cancel: _Cancel | None = None
        self._pbar = None
        #: The running (or last) worker.
        self.worker = None

    # ----------------------------------------------------------------------------- state
    @property
    def busy(self) -> bool:
        """True from :meth:`run` until its result (or error) has been handled in the GUI thread."""
        return self._busy

    def _on_image_changed(self, layer: Any) -> None:
        # the slice axis only means something for volumes
        self._slice_axis.enabled = layer is not None and layer.ndim == 3 and not layer.rgb

    def _on_model_changed(self, value: str) -> None:
        self._path.visible = value != "bundled"
        self._path.mode = "d" if value == "bundle" else "r"

    def _model_source(self) -> tuple[str, Path | None]:
        """The chosen model as ``(kind, path)``; raises ValueError for a missing file or folder."""
        kind = self._model.value
        if kind == "bundled":
            return kind, None
        path = Path(str(self._path.value)).expanduser()
        if kind == "bundle" and not path.is_dir():
            raise ValueError(f"bundle folder {path} does not exist; choose the folder that holds configs/ and models/.")
        if kind == "checkpoint" and not path.is_file():
            raise ValueError(f"checkpoint file {path} does not exist; choose a .pt file written by training.")
        return kind, path.resolve()

    def _confirm_bundle(self, path: Path) -> bool:
        """Ask before loading a bundle other than the shipped one (its configs can run code)."""
        from qtpy.QtWidgets import QMessageBox

        from napari_uspmie.io.packaged_data import bundle_path

        try:
            shipped = bundle_path().resolve()
        except FileNotFoundError:
            shipped = None
        if path == shipped or path in self._trusted:
            return True
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Load another bundle?",
            f"Load the MONAI bundle in\n{path}?\n\nA bundle's configuration files can run Python code. "
            "Only load bundles from sources you trust.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self.native,
        )
        box.setObjectName("uspmie_bundle_confirmation")
        box.setDefaultButton(QMessageBox.StandardButton.No)
        if box.exec() != QMessageBox.StandardButton.Yes:
            return False
        self._trusted.add(path)
        return True

    # ----------------------------------------------------------------------------- run
    def run(self, *_: Any):
        """Start enhancing the chosen layer in a background thread.

        Returns:
            The napari worker, or ``None`` when nothing was started (a notification says why).
        """
        import torch
        from napari.qt.threading import create_worker

        if self._busy:
            notify_info("An enhancement is already running; cancel it or wait for it to finish.")
            return None
        layer = self._image.value
        try:
            if layer is None:
                raise ValueError("no image layer to enhance; open an image first.")
            kind = image_kind(layer)
            source, path = self._model_source()
            device = self._device.value
            if device == "cuda" and not torch.cuda.is_available():
                raise ValueError("CUDA was chosen but no CUDA GPU was found; choose auto or cpu.")
        except ValueError as exc:
            notify_error(f"Enhance: {exc}")
            return None
        if source == "bundle" and not self._confirm_bundle(path):
            notify_info(f"Enhance: the bundle in {path} was not loaded.")
            return None
        compiled = bool(self._compile.value) and self._compile.enabled
        load_args = {"device": device, "bf16": bool(self._bf16.value), "compile": compiled}
        if source == "bundle":
            load_args["bundle_dir"] = path
        elif source == "checkpoint":
            load_args["checkpoint"] = path
        stamp = path.stat().st_mtime if path is not None and path.is_file() else None
        key = (source, path, stamp, device, load_args["bf16"], compiled)
        tile = int(self._tile.value)
        options = {
            "channel_axis": -1 if kind in ("rgb", "rgba") else None,
            "slice_axis": int(self._slice_axis.value) if kind == "3d" else 0,
            "tile_size": max(16, tile // 4 * 4) if tile else None,
        }
        return self._start(create_worker, layer, key, load_args, options)

    def _start(self, create_worker, layer, key: tuple, load_args: dict, options: dict):
        cancel = _Cancel()
        relay = _relay()
        pbar = _progress_bar(f"Enhancing {layer.name}", cancel.set)
        relay.progressed.connect(self._on_progress)

        def progress(done: int, total: int) -> bool:
            relay.progressed.emit(done, total)  # queued to the GUI thread
            return not cancel.is_set()

        worker = create_worker(
            _enhance_job,
            self._enhancers.get(key),
            load_args,
            layer.data,
            options,
            progress,
            cancel,
            _start_thread=False,
        )
        cancel.worker = worker
        worker.returned.connect(lambda outcome: self._on_returned(outcome, layer, key))
        worker.finished.connect(self._on_finished)
        self.worker, self._cancel, self._pbar, self._relay = worker, cancel, pbar, relay
        self._busy = self._running = True
        self._run.enabled = False
        self._cancel_button.enabled = True
        self._status.value = f"enhancing {layer.name} ..."
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Stop the running enhancement before its next network call."""
        if self._cancel is not None and self._busy:
            self._cancel.set()
            self._status.value = "cancelling ..."

    # ----------------------------------------------------------------------------- GUI-thread slots
    def _on_progress(self, done: int, total: int) -> None:
        if self._pbar is None or not self._running:
            return  # a late event of a run whose result is already handled
        # Status first: updating the progress bar can process pending events, among them this
        # run's result, whose final status must not be overwritten afterwards.
        if not (self._cancel and self._cancel.is_set()):
            self._status.value = f"enhancing: {done}/{total}"
        if self._pbar.total != total:
            self._pbar.total = total
        if done > self._pbar.n:
            self._pbar.update(done - self._pbar.n)

    def _on_returned(self, outcome: JobOutcome, layer, key: tuple) -> None:
        self._running = False
        result, enhancer, seconds = outcome.value if outcome.value is not None else (None, None, 0.0)
        if enhancer is not None:
            self._enhancers[key] = enhancer
        if outcome.cancelled:
            self._status.value = "cancelled"
            notify_info(f"Enhancement of '{layer.name}' cancelled; no layer was added.")
            return
        if outcome.error is not None:
            self._status.value = "failed"
            notify_error(f"Enhance '{layer.name}' failed: {describe_exception(outcome.error)}")
            return
        try:
            self._add_result(layer, result, enhancer)
        except Exception as exc:  # e.g. the source layer was deleted or changed meanwhile
            self._status.value = "failed"
            notify_error(f"Enhance '{layer.name}': could not add the result layer: {describe_exception(exc)}")
            return
        self._status.value = f"done in {seconds:.1f} s on {enhancer.device}"

    def _add_result(self, layer, result: np.ndarray, enhancer) -> None:
        metadata = layer_metadata(layer)
        metadata["enhancement"] = {"source_layer": layer.name, "model": repr(enhancer)}
        kwargs = {"name": f"{layer.name} enhanced", "metadata": metadata, **layer_geometry(layer)}
        kwargs["contrast_limits"] = tuple(layer.contrast_limits)
        kwargs["rgb"] = layer.rgb
        if not layer.rgb:
            kwargs["colormap"] = layer.colormap
            kwargs["gamma"] = layer.gamma
        self._viewer.add_image(result, **kwargs)

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
        self._pbar = None
        self._busy = self._running = False
        self._run.enabled = True
        self._cancel_button.enabled = False
