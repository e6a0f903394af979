"""The "Enhance (LaMEGAN)" dock widget under Xvfb: geometry kept, threaded, cancellable, errors notified."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from skimage import data, transform

from tests.plugin.napari_helpers import PLUGIN, notification_messages, save_checkpoint
from tests.plugin.napari_helpers import dock_enhance_widget as _widget
from tests.plugin.napari_helpers import run_enhance as _enhance

pytestmark = pytest.mark.gui


def _assert_same_geometry(result, source):
    for key in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_allclose(np.asarray(getattr(result, key)), np.asarray(getattr(source, key)), err_msg=key)
    np.testing.assert_allclose(result.affine.affine_matrix, source.affine.affine_matrix)
    assert tuple(result.units) == tuple(source.units)
    assert tuple(result.axis_labels) == tuple(source.axis_labels)
    assert tuple(result.contrast_limits) == pytest.approx(tuple(source.contrast_limits))
    for key, value in source.metadata.items():
        assert key in result.metadata and result.metadata[key] == value
    for world in ([3.0, -2.0], [50.0, 20.0]) if source.ndim == 2 else ([1.0, 3.0, -2.0],):
        np.testing.assert_allclose(result.world_to_data(world), source.world_to_data(world))


def test_both_widgets_dock_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    _, enhance = viewer.window.add_plugin_dock_widget(PLUGIN, "Enhance (LaMEGAN)")
    _, heatmap = viewer.window.add_plugin_dock_widget(PLUGIN, "LaSSIM heatmap")
    assert type(enhance).__name__ == "EnhanceWidget" and type(heatmap).__name__ == "HeatmapWidget"
    viewer.add_image(np.zeros((8, 8)), name="img")
    viewer.add_labels(np.zeros((8, 8), int), name="labels")
    # only image layers are offered
    assert [layer.name for layer in enhance.image.choices] == ["img"]
    assert [layer.name for layer in heatmap.original.choices] == ["img"]
    # the device box says what was found
    texts = [enhance.device.native.itemText(i) for i in range(enhance.device.native.count())]
    assert texts[0].startswith("auto ->") and texts[2].startswith("cpu")
    assert ("not found" in texts[1]) != torch.cuda.is_available()


def test_a_long_verdict_wraps_inside_the_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _, enhance = viewer.window.add_plugin_dock_widget(PLUGIN, "Enhance (LaMEGAN)")
    qtbot.wait(50)
    width = enhance.native.width()
    enhance.status.value = "done in 2.4 s on cpu; structure kept (worst LaSSIM 0.913 at level 2, slice 19; " + (
        "12 slices below the per-slice thresholds, within the 13 a good enhancement may show: 1, 2, 3, 4, 5, ...)" * 3
    )
    qtbot.wait(50)
    assert enhance.native.width() <= width + 10  # the dock keeps its width; the verdict wraps
    assert enhance.status.native.height() > enhance.status.native.fontMetrics().height() * 2


def test_enhance_2d_keeps_full_geometry(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = transform.resize(data.camera(), (64, 48), preserve_range=True).astype(np.uint8)
    source = viewer.add_image(
        image,
        name="camera",
        scale=(0.5, 0.25),
        translate=(10.0, -3.0),
        rotate=15.0,
        shear=[0.1],
        affine=np.array([[1.0, 0.0, 2.0], [0.0, -1.0, 5.0], [0.0, 0.0, 1.0]]),
        units=("mm", "mm"),
        axis_labels=("row", "col"),
        metadata={"patient": "P001", "spacing": (0.5, 0.25)},
        contrast_limits=(10, 200),
    )
    widget = _widget(viewer, tiny_checkpoint)
    _enhance(qtbot, widget, source)
    result = viewer.layers["camera enhanced"]
    assert result.data.shape == image.shape and result.data.dtype == image.dtype
    assert not np.array_equal(result.data, image)  # the random network did change it
    _assert_same_geometry(result, source)
    assert result.metadata["enhancement"]["source_layer"] == "camera"
    assert "done" in widget.status.value


def test_bf16_box_runs_the_model_in_bfloat16(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = transform.resize(data.camera(), (64, 48), preserve_range=True).astype(np.uint8)
    source = viewer.add_image(image, name="camera")
    widget = _widget(viewer, tiny_checkpoint)
    assert widget.bf16.value is False  # float32 unless asked
    assert "bfloat16" in widget.bf16.tooltip
    _enhance(qtbot, widget, source)
    widget.bf16.value = True
    _enhance(qtbot, widget, source)
    fp32, bf16 = viewer.layers["camera enhanced"], viewer.layers["camera enhanced [1]"]
    assert "bf16" in bf16.metadata["enhancement"]["model"] and "bf16" not in fp32.metadata["enhancement"]["model"]
    diff = np.abs(fp32.data.astype(int) - bf16.data.astype(int))
    assert 0 < diff.max() <= 16


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU builds C++ kernels with g++")
def test_compile_box_runs_the_compiled_network(make_napari_viewer, qtbot, tiny_checkpoint):
    """The compile box: the network through torch.compile (Winograd on CPU), same image within one grey level."""
    viewer = make_napari_viewer()
    image = transform.resize(data.camera(), (64, 48), preserve_range=True).astype(np.uint8)
    source = viewer.add_image(image, name="camera")
    widget = _widget(viewer, tiny_checkpoint)
    assert widget.compile.value is False and widget.compile.enabled
    _enhance(qtbot, widget, source)
    widget.compile.value = True
    _enhance(qtbot, widget, source)
    eager, compiled = viewer.layers["camera enhanced"], viewer.layers["camera enhanced [1]"]
    assert "compiled" in compiled.metadata["enhancement"]["model"]
    assert "compiled" not in eager.metadata["enhancement"]["model"]
    assert np.abs(eager.data.astype(int) - compiled.data.astype(int)).max() <= 1
    assert not np.array_equal(compiled.data, image)


def test_enhance_rgb_and_3d(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    rgb = (transform.resize(data.astronaut(), (48, 64), anti_aliasing=True) * 255).astype(np.uint8)
    colour = viewer.add_image(rgb, name="astronaut", rgb=True, scale=(2.0, 3.0), translate=(-5.0, 7.0))
    widget = _widget(viewer, tiny_checkpoint)
    _enhance(qtbot, widget, colour)
    result = viewer.layers["astronaut enhanced"]
    assert result.rgb and result.data.shape == rgb.shape and result.data.dtype == np.uint8
    _assert_same_geometry(result, colour)

    rng = np.random.default_rng(0)
    volume = (rng.random((5, 32, 40)) * 1000 - 200).astype(np.int16)
    source = viewer.add_image(
        volume, name="vol", scale=(4.0, 0.8, 0.7), translate=(1.0, 2.0, 3.0), units=("mm", "mm", "mm")
    )
    widget.slice_axis.value = 2  # along columns: 40 slices of 5 x 32
    _enhance(qtbot, widget, source)
    result = viewer.layers["vol enhanced"]
    assert result.data.shape == volume.shape and result.data.dtype == np.int16
    assert result.data.min() >= volume.min() and result.data.max() <= volume.max()
    _assert_same_geometry(result, source)


def test_cancel_stops_the_worker(make_napari_viewer, qtbot, tmp_path, notifications, shipped_architecture):
    checkpoint = save_checkpoint(tmp_path / "model.pt", shipped_architecture)
    viewer = make_napari_viewer()
    volume = np.random.default_rng(1).random((48, 192, 192)).astype(np.float32)
    source = viewer.add_image(volume, name="big")
    widget = _widget(viewer, checkpoint)
    widget.image.value = source
    widget.run()
    qtbot.waitUntil(lambda: widget._pbar is not None and widget._pbar.n >= 1, timeout=60_000)
    bar = widget._pbar
    widget.cancel_button.clicked.emit()  # the widget's own cancel button
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.status.value == "cancelled"
    assert "big enhanced" not in viewer.layers
    assert any("cancelled" in m for m in notification_messages(notifications, "info"))
    assert 1 <= bar.n < bar.total  # stopped before the end

    # the napari progress bar's own cancel button does the same
    widget.run()
    qtbot.waitUntil(lambda: widget._pbar is not None and widget._pbar.n >= 1, timeout=60_000)
    widget._pbar.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.status.value == "cancelled" and "big enhanced" not in viewer.layers


def test_bad_inputs_notify(make_napari_viewer, qtbot, tmp_path, notifications, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    # a layer of the wrong kind: 4D (time series)
    timeseries = viewer.add_image(np.zeros((2, 3, 16, 16), np.float32), name="4d")
    widget.image.value = timeseries
    assert widget.run() is None
    assert any("only 2D" in m and "4d" in m for m in notification_messages(notifications, "error"))
    # a missing checkpoint
    image = viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget.image.value = image
    widget.model.value = "checkpoint"
    widget.model_path.value = str(tmp_path / "missing.pt")
    assert widget.run() is None
    assert any("missing.pt does not exist" in m for m in notification_messages(notifications, "error"))
    # a checkpoint that tries to run code when unpickled: refused by weights_only=True
    marker = tmp_path / "code-ran"
    torch.save({"evil": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    widget.model_path.value = str(tmp_path / "evil.pt")
    _enhance(qtbot, widget, image)
    assert not marker.exists()
    assert any("evil.pt" in m for m in notification_messages(notifications, "error"))
    assert "img enhanced" not in viewer.layers
    # NaN values: the enhancer's message reaches the user
    widget.model_path.value = str(tiny_checkpoint)
    bad = viewer.add_image(np.full((16, 16), np.nan, np.float32), name="nan")
    _enhance(qtbot, widget, bad)
    assert any("NaN" in m for m in notification_messages(notifications, "error"))
    if not torch.cuda.is_available():
        widget.device.value = "cuda"
        assert widget.run() is None
        assert any("no CUDA GPU" in m for m in notification_messages(notifications, "error"))


class _RunsCode:
    """Pickles as a call to ``open(path, "w")``: creating the file would prove code ran on load."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_other_bundle_needs_confirmation(make_napari_viewer, qtbot, tmp_path, notifications, tiny_checkpoint):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    save_checkpoint(bundle / "models" / "model.pt")
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="img")
    widget = _widget(viewer)
    widget.model.value = "bundle"
    widget.model_path.value = str(bundle)
    asked: list[str] = []

    def answer(button):
        def poll():
            box = QApplication.activeModalWidget()
            if isinstance(box, QMessageBox):
                asked.append(box.text())
                box.button(button).click()
            else:
                QTimer.singleShot(20, poll)

        QTimer.singleShot(20, poll)

    answer(QMessageBox.StandardButton.No)
    widget.image.value = image
    assert widget.run() is None
    assert len(asked) == 1 and "can run Python code" in asked[0]
    assert any("was not loaded" in m for m in notification_messages(notifications, "info"))

    answer(QMessageBox.StandardButton.Yes)
    _enhance(qtbot, widget, image)
    assert "img enhanced" in viewer.layers and len(asked) == 2
    _enhance(qtbot, widget, image)  # trusted for the session: no second question
    assert len(asked) == 2 and "img enhanced [1]" in viewer.layers
