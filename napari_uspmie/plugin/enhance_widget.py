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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox, create_widget

from napari_uspmie.inference.checked import STRUCTURE_POLICIES
from napari_uspmie.plugin.heatmap_widget import add_heatmap_layer
from napari_uspmie.plugin.layers import (
    JobOutcome,
    describe_exception,
    device_choices,
    image_kind,
    layer_geometry,
    layer_metadata,
    layer_spacing,
    notify_error,
    notify_info,
    notify_warning,
)
from napari_uspmie.plugin.run_support import (
    COMPILE_TIP,
    CancelFlag,
    bf16_tooltip,
    can_compile,
    progress_bar,
    progress_relay,
)

if TYPE_CHECKING:
    import napari

__all__ = ["EnhanceWidget", "worker_threads"]

MODEL_CHOICES = [("bundled default", "bundled"), ("bundle folder", "bundle"), ("checkpoint file", "checkpoint")]


def worker_threads() -> int:
    """Torch threads for a run from the GUI: all cores but one, so the event loop keeps a core."""
    return max(1, (os.cpu_count() or 2) - 1)


def _enhance_job(enhancer, load_args: dict, data: Any, options: dict, progress, cancel: CancelFlag) -> JobOutcome:
    """Worker-thread body: load the model if needed, take the checked path, and when the structure
    guard fails compute the heatmap at the worst level; hand back ``(result, enhancer, seconds, heatmap)``."""
    import torch

    from napari_uspmie.errors import EnhancementCancelled
    from napari_uspmie.inference.checked import enhance_checked

    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, worker_threads()))
    start = time.perf_counter()
    try:
        if enhancer is None:
            from napari_uspmie.inference.enhancer import load_enhancer

            enhancer = load_enhancer(**load_args)
        array = np.asarray(data)  # dask/zarr layers are read here, off the GUI thread
        result = enhance_checked(enhancer, array, progress=progress, cancel=cancel, **options)
        heat = None
        if not result.verdict.kept and "level" in result.verdict.worst:
            from napari_uspmie.plugin.heatmap_widget import lassim_heatmap

            rgb = options["channel_axis"] is not None
            heat = lassim_heatmap(array, result.enhanced, result.verdict.worst["level"], rgb, rgb)
        return JobOutcome(value=(result, enhancer, time.perf_counter() - start, heat))
    except EnhancementCancelled:
        return JobOutcome(cancelled=True, value=(None, enhancer, time.perf_counter() - start, None))
    except Exception as exc:  # reported in the GUI thread by _on_returned
        return JobOutcome(error=exc, value=(None, enhancer, 0.0, None))
    finally:
        torch.set_num_threads(previous)


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
        self._bf16.tooltip = bf16_tooltip()
        self._compile = CheckBox(name="compile", text="compile (faster for volumes)", value=False)
        self._compile.enabled = can_compile()
        self._compile.tooltip = COMPILE_TIP if self._compile.enabled else "Needs a C++ compiler (g++) on CPU."
        self._allow_out_of_scope = CheckBox(name="allow_out_of_scope", text="allow out of scope", value=False)
        self._allow_out_of_scope.tooltip = (
            "Enhance images outside what the model was trained on (another modality, colour into a grey model, "
            "pixel sizes far from its own). The structure guard still checks the result."
        )
        self._on_structure_loss = ComboBox(
            name="on_structure_loss", label="on structure loss", choices=list(STRUCTURE_POLICIES), value="warn"
        )
        self._on_structure_loss.tooltip = (
            "When the structure guard finds lost structure: warn (add the result, flagged, with its LaSSIM heatmap), "
            "keep-input (add the input unchanged, flagged) or fail (add nothing)."
        )
        self._run = PushButton(name="enhance_button", text="Enhance")
        self._cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._status = Label(name="status", label="", value="")
        from qtpy.QtWidgets import QSizePolicy  # Qt only once a widget is built

        # a verdict naming slices wraps to the dock's width instead of widening it
        self._status.native.setWordWrap(True)
        self._status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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
                self._allow_out_of_scope,
                self._on_structure_loss,
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
        self._cancel: CancelFlag | None = None
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
        slice_axis = int(self._slice_axis.value) if kind == "3d" else 0
        metadata = layer.metadata if isinstance(layer.metadata, dict) else {}
        options = {
            "source": layer.name,
            "channel_axis": -1 if kind in ("rgb", "rgba") else None,
            "slice_axis": slice_axis,
            "tile_size": max(16, tile // 4 * 4) if tile else None,
            "spacing": layer_spacing(layer, slice_axis),
            "modality": str(metadata.get("modality") or "") or None,
            "allow_out_of_scope": bool(self._allow_out_of_scope.value),
            "on_structure_loss": self._on_structure_loss.value,
        }
        return self._start(create_worker, layer, key, load_args, options)

    def _start(self, create_worker, layer, key: tuple, load_args: dict, options: dict):
        cancel = CancelFlag()
        relay = progress_relay()
        pbar = progress_bar(f"Enhancing {layer.name}", cancel.set)
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
        result, enhancer, seconds, heat = outcome.value if outcome.value is not None else (None, None, 0.0, None)
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
            self._add_result(layer, result, enhancer, heat)
        except Exception as exc:  # e.g. the source layer was deleted or changed meanwhile
            self._status.value = "failed"
            notify_error(f"Enhance '{layer.name}': could not add the result layer: {describe_exception(exc)}")
            return
        self._status.value = f"done in {seconds:.1f} s on {enhancer.device}; {result.verdict.summary()}"

    def _add_result(self, layer, result, enhancer, heat) -> None:
        metadata = layer_metadata(layer)
        metadata["enhancement"] = {"source_layer": layer.name, "model": repr(enhancer), **result.report()}
        name = f"{layer.name} enhanced" + (" (input kept)" if result.kept_input else "")
        kwargs = {"name": name, "metadata": metadata, **layer_geometry(layer)}
        kwargs["contrast_limits"] = tuple(layer.contrast_limits)
        kwargs["rgb"] = layer.rgb
        if not layer.rgb:
            kwargs["colormap"] = layer.colormap
            kwargs["gamma"] = layer.gamma
        added = self._viewer.add_image(result.output, **kwargs)
        for problem in result.scope_problems:
            notify_warning(f"'{layer.name}' is out of the model's scope (enhanced because allowed): {problem}.")
        if not result.verdict.kept:
            notify_warning(f"'{layer.name}': {result.verdict.summary()}. The LaSSIM heatmap shows where.")
            if heat is not None:
                heatmap, score, mode = heat
                level = result.verdict.worst["level"]
                add_heatmap_layer(self._viewer, heatmap, layer, added.name, level, score, mode)

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
        self._pbar = None
        self._busy = self._running = False
        self._run.enabled = True
        self._cancel_button.enabled = False
