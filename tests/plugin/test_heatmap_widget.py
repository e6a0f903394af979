"""The "LaSSIM heatmap" dock widget under Xvfb: score, heatmap shape and world alignment."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from napari_uspmie import lassim
from napari_uspmie.plugin.heatmap_widget import lassim_heatmap
from tests.plugin.napari_helpers import notification_messages

pytestmark = pytest.mark.gui

PLUGIN = "napari-uspmie"


@pytest.fixture
def camera64() -> np.ndarray:
    return transform.resize(data.camera(), (64, 80), anti_aliasing=True, preserve_range=True).astype(np.uint8)


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "LaSSIM heatmap")
    return widget


def _run(qtbot, widget):
    worker = widget.compute()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    return worker


def test_heatmap_2d_score_shape_and_alignment(make_napari_viewer, qtbot, camera64):
    viewer = make_napari_viewer()
    geometry = {"scale": (0.5, 0.25), "translate": (10.0, -3.0)}
    deformed = np.roll(camera64, 3, axis=1)
    original = viewer.add_image(camera64, name="cam", **geometry)
    enhanced = viewer.add_image(deformed, name="cam enhanced", **geometry)
    widget = _dock(viewer)
    # the "<name> enhanced" layer is paired with its source by default
    assert widget.original.value is original and widget.enhanced.value is enhanced
    widget.level.value = 2
    _run(qtbot, widget)

    heat = viewer.layers["cam enhanced LaSSIM"]
    assert heat.data.shape == camera64.shape
    np.testing.assert_allclose(heat.scale, original.scale)
    np.testing.assert_allclose(heat.translate, original.translate)
    np.testing.assert_allclose(heat.affine.affine_matrix, original.affine.affine_matrix)
    assert heat.blending == "translucent" and 0 < heat.opacity < 1
    expected = lassim(deformed, camera64, level=2)
    assert heat.metadata["lassim_score"] == pytest.approx(expected, abs=1e-9)
    assert f"{expected:.4f}" in widget.score.value
    # a world point maps to the same data index in the image and in the heatmap
    world = (20.0, 5.0)
    assert np.allclose(heat.world_to_data(world), original.world_to_data(world))


def test_heatmap_rgb_and_gray_pair_and_identity(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgb = (transform.resize(data.astronaut(), (64, 64), anti_aliasing=True) * 255).astype(np.uint8)
    original = viewer.add_image(rgb, name="rgb", rgb=True, scale=(2.0, 2.0))
    gray = viewer.add_image(rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]), name="gray")
    widget = _dock(viewer)
    widget.original.value, widget.enhanced.value = original, gray
    widget.level.value = 1
    _run(qtbot, widget)
    heat = viewer.layers["gray LaSSIM"]
    assert heat.data.shape == (64, 64)
    assert not heat.rgb
    np.testing.assert_allclose(heat.scale, (2.0, 2.0))
    # the gray layer is the RGB one's luma, so the structure is identical
    assert heat.metadata["lassim_score"] == pytest.approx(1.0, abs=1e-9)


def test_heatmap_3d_volume_and_thin_volume_fallback(make_napari_viewer, qtbot, notifications):
    rng = np.random.default_rng(0)
    volume = rng.random((52, 52, 52)).astype(np.float32)
    noisy = volume + 0.3 * rng.random(volume.shape).astype(np.float32)
    heat3d, score3d, mode = lassim_heatmap(volume, noisy, level=3)
    assert mode == "3D" and heat3d.shape == volume.shape
    assert score3d == pytest.approx(lassim(noisy, volume, level=3), abs=1e-9)

    viewer = make_napari_viewer()
    thin = volume[:8]
    original = viewer.add_image(thin, name="thin", scale=(5.0, 1.0, 1.0), translate=(1.0, 2.0, 3.0))
    enhanced = viewer.add_image(noisy[:8], name="thin enhanced")
    widget = _dock(viewer)
    widget.original.value, widget.enhanced.value = original, enhanced
    widget.level.value = 3
    _run(qtbot, widget)
    heat = viewer.layers["thin enhanced LaSSIM"]
    assert heat.data.shape == thin.shape
    np.testing.assert_allclose(heat.scale, (5.0, 1.0, 1.0))
    np.testing.assert_allclose(heat.translate, (1.0, 2.0, 3.0))
    per_slice = [lassim(noisy[i], thin[i], level=3) for i in range(8)]
    assert heat.metadata["lassim_score"] == pytest.approx(np.mean(per_slice), abs=1e-9)
    assert heat.metadata["lassim_mode"] == "slice-wise 2D along axis 0"
    assert any("slice-wise" in m for m in notification_messages(notifications, "info"))


def test_heatmap_bad_input_notifies(make_napari_viewer, qtbot, notifications, camera64):
    viewer = make_napari_viewer()
    viewer.add_image(camera64, name="a")
    viewer.add_image(camera64[:40], name="b")
    widget = _dock(viewer)
    widget.original.value, widget.enhanced.value = viewer.layers["a"], viewer.layers["b"]
    _run(qtbot, widget)
    assert any("differ in size" in m for m in notification_messages(notifications, "error"))
    assert "b LaSSIM" not in viewer.layers

    # too small for the level along two axes: a clear message, no layer
    widget.original.value, widget.enhanced.value = viewer.layers["a"], viewer.layers["a"]
    widget.level.value = 5
    _run(qtbot, widget)
    assert any("too small for LaSSIM at level 5" in m for m in notification_messages(notifications, "error"))
