"""napari dock widget "LaSSIM heatmap": score and structure map between two image layers.

The heatmap is LaSSIM's SSIM map at one Laplacian band, upsampled to the image size
(:func:`napari_uspmie.lassim_map`). Low values (red) mark where the enhanced image's
structure departs from the original's; it is added as a translucent layer with the
original layer's geometry, so it lies exactly over the image.

Scores follow the one rule of every tool (:mod:`napari_uspmie.metric.lassim_rule`): volumes
slice by slice along axis 0 (the enhancer's slices), the score the mean over slices, and the
chosen level lowered to the largest that fits slices too small for it (the widget says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton, SpinBox, create_widget

from napari_uspmie.io.heatmap import HEATMAP_COLORS, HEATMAP_CONTROLS, HEATMAP_NAME
from napari_uspmie.metric.lassim_rule import lassim_by_slice
from napari_uspmie.plugin.layers import (
    JobOutcome,
    as_float_gray,
    describe_exception,
    image_kind,
    layer_geometry,
    notify_error,
    notify_info,
)

if TYPE_CHECKING:
    import napari

__all__ = ["HeatmapWidget", "lassim_heatmap", "lassim_colormap"]

MAX_LEVEL = 5


def lassim_colormap():
    """The package's heatmap colours (:mod:`napari_uspmie.io.heatmap`) as a napari colormap."""
    from napari.utils.colormaps import Colormap

    colors = np.concatenate([np.asarray(HEATMAP_COLORS), np.ones((len(HEATMAP_COLORS), 1))], axis=1)
    return Colormap(colors=colors, controls=list(HEATMAP_CONTROLS), name=HEATMAP_NAME)


def _prepare_pair(original: Any, enhanced: Any, original_rgb: bool, enhanced_rgb: bool):
    """Float arrays of equal shape: both RGB ``(H, W, 3)``, or both gray (RGB reduced to luma)."""
    a, b = np.asarray(original), np.asarray(enhanced)
    if original_rgb and enhanced_rgb:
        a, b = a[..., :3].astype(np.float64), b[..., :3].astype(np.float64)
    else:
        # Raw values, not dtype-scaled: LaSSIM is invariant to a common scale, and raw
        # values keep a uint8 original comparable with a float result of the same range.
        a, b = as_float_gray(a, original_rgb), as_float_gray(b, enhanced_rgb)
    if a.shape != b.shape:
        raise ValueError(
            f"the two layers differ in size: {a.shape} and {b.shape}; compare an image with its own result."
        )
    return a, b


def lassim_heatmap(
    original: Any,
    enhanced: Any,
    level: int = 3,
    original_rgb: bool = False,
    enhanced_rgb: bool = False,
) -> tuple[np.ndarray, float, str]:
    """LaSSIM heatmap and score between two layers' data.

    Args:
        original: the input image, ``(H, W)``, ``(H, W, 3|4)`` (with ``original_rgb``) or ``(D, H, W)``.
        enhanced: the enhanced image, the same spatial shape.
        level: Laplacian band (paper: 3).
        original_rgb, enhanced_rgb: whether the last axis holds colour channels.

    Returns:
        ``(heatmap, score, mode)``: a float32 map of the spatial shape, the LaSSIM score and
        a short description of how it was computed (``"2D"`` or ``"slice by slice along axis 0"``,
        plus the level used when ``level`` does not fit), by the one rule of
        :mod:`napari_uspmie.metric.lassim_rule`.

    Raises:
        ValueError: shapes differ, too many dimensions, or slices too small for any level.
    """
    a, b = _prepare_pair(original, enhanced, original_rgb, enhanced_rgb)
    rgb = original_rgb and enhanced_rgb
    result = lassim_by_slice(a, b, level=level, max_level=MAX_LEVEL, rgb=rgb, heatmap=True)
    mode = "2D" if (rgb or a.ndim == 2) else "slice by slice along axis 0"
    if result.level != level:
        mode += f", level {result.level} (level {level} does not fit)"
    return result.heatmap.astype(np.float32), result.score, mode


def add_heatmap_layer(viewer, heat: np.ndarray, original, enhanced_name: str, level: int, score: float, mode: str):
    """Show a LaSSIM heatmap over ``original`` as ``"<enhanced> LaSSIM"`` (replacing an earlier one).

    Returns:
        The layer's name.
    """
    name = f"{enhanced_name} LaSSIM"
    metadata = {
        "lassim_score": score,
        "level": level,
        "lassim_mode": mode,
        "original": original.name,
        "enhanced": enhanced_name,
    }
    if name in viewer.layers:
        # Recomputing (another level, a new result) replaces the map instead of piling up layers.
        viewer.layers.remove(name)
    viewer.add_image(
        heat,
        name=name,
        colormap=lassim_colormap(),
        contrast_limits=(0.0, 1.0),
        opacity=0.5,
        blending="translucent",
        metadata=metadata,
        **layer_geometry(original),
    )
    return name


def _heatmap_job(original, enhanced, level, original_rgb, enhanced_rgb) -> JobOutcome:
    try:
        return JobOutcome(value=lassim_heatmap(original, enhanced, level, original_rgb, enhanced_rgb))
    except Exception as exc:  # reported in the GUI thread by _on_returned
        return JobOutcome(error=exc)


class HeatmapWidget(Container):
    """Dock widget: pick the original and the enhanced layer and a level; shows the LaSSIM
    score and adds (or refreshes) a ``"<enhanced> LaSSIM"`` heatmap layer over the image.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image

        super().__init__()
        self._viewer = napari_viewer
        self._original = create_widget(annotation=Image, name="original", label="original")
        self._enhanced = create_widget(annotation=Image, name="enhanced", label="enhanced")
        self._level = SpinBox(name="level", label="pyramid level", value=3, min=0, max=MAX_LEVEL)
        self._level.tooltip = "Laplacian band compared by LaSSIM (paper: 3); lower levels compare finer detail."
        self._button = PushButton(name="compute_button", text="Compute LaSSIM")
        self._score = Label(name="score", label="", value="LaSSIM: -")
        self.extend([self._original, self._enhanced, self._level, self._button, self._score])
        self._button.changed.connect(self.compute)
        #: The running (or last) worker.
        self.worker = None
        self._busy = False

    @property
    def busy(self) -> bool:
        """True from :meth:`compute` until its result (or error) has been handled in the GUI thread."""
        return self._busy

    def _on_finished(self) -> None:
        self._busy = False
        self._button.enabled = True

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer lists; pair an image with its ``"<name> enhanced"`` result when both exist."""
        super().reset_choices()
        original, enhanced = self._original.value, self._enhanced.value
        if original is not None and original is enhanced:
            for layer in self._enhanced.choices:
                if layer.name == f"{original.name} enhanced":
                    self._enhanced.value = layer
                    break

    def compute(self, *_: Any):
        """Start computing the heatmap in a background thread.

        Returns:
            The napari worker, or ``None`` when the input was rejected (a notification says why).
        """
        from napari.qt.threading import create_worker

        if self.busy:
            notify_info("LaSSIM is already being computed; wait for it to finish.")
            return None
        original, enhanced = self._original.value, self._enhanced.value
        try:
            if original is None or enhanced is None:
                raise ValueError("choose two image layers: the original and the enhanced image.")
            original_rgb = image_kind(original) in ("rgb", "rgba")
            enhanced_rgb = image_kind(enhanced) in ("rgb", "rgba")
        except ValueError as exc:
            notify_error(f"LaSSIM heatmap: {exc}")
            return None
        level = int(self._level.value)
        self._score.value = "LaSSIM: computing..."
        self._button.enabled = False
        worker = create_worker(
            _heatmap_job,
            original.data,
            enhanced.data,
            level,
            original_rgb,
            enhanced_rgb,
            _progress={"desc": f"LaSSIM {enhanced.name} vs {original.name}"},
            _start_thread=False,
        )
        worker.returned.connect(lambda outcome: self._on_returned(outcome, original, enhanced, level))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._busy = True
        worker.start()
        return worker

    def _on_returned(self, outcome: JobOutcome, original, enhanced, level: int) -> None:
        if outcome.error is not None:
            self._score.value = "LaSSIM: -"
            notify_error(f"LaSSIM heatmap failed: {describe_exception(outcome.error)}")
            return
        heat, score, mode = outcome.value
        self._score.value = f"LaSSIM (level {level}, {mode}): {score:.4f}"
        add_heatmap_layer(self._viewer, heat, original, enhanced.name, level, score, mode)
