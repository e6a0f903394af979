"""The "LaSSIM heatmap" dock widget under Xvfb: score, heatmap shape and world alignment."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from napari_uspmie import lassim
from napari_uspmie.metric.lassim_rule import lassim_by_slice
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


def test_heatmap_scores_volumes_slice_by_slice_by_the_one_rule(make_napari_viewer, qtbot):
    rng = np.random.default_rng(0)
    volume = rng.random((6, 52, 60)).astype(np.float32)
    noisy = volume + 0.3 * rng.random(volume.shape).astype(np.float32)
    heat, score, mode = lassim_heatmap(volume, noisy, level=3)
    assert mode == "slice by slice along axis 0" and heat.shape == volume.shape
    assert score == pytest.approx(np.mean([lassim(noisy[i], volume[i], level=3) for i in range(6)]), abs=1e-9)
    assert score == pytest.approx(lassim_by_slice(noisy, volume, level=3).score, abs=1e-12)

    viewer = make_napari_viewer()
    small = volume[:, :40, :40]  # slices too small for level 3: the largest level that fits, said so
    original = viewer.add_image(small, name="small", scale=(5.0, 1.0, 1.0), translate=(1.0, 2.0, 3.0))
    enhanced = viewer.add_image(noisy[:, :40, :40], name="small enhanced")
    widget = _dock(viewer)
    widget.original.value, widget.enhanced.value = original, enhanced
    widget.level.value = 3
    _run(qtbot, widget)
    heat = viewer.layers["small enhanced LaSSIM"]
    assert heat.data.shape == small.shape
    np.testing.assert_allclose(heat.scale, (5.0, 1.0, 1.0))
    np.testing.assert_allclose(heat.translate, (1.0, 2.0, 3.0))
    per_slice = [lassim(noisy[i, :40, :40], small[i], level=2) for i in range(6)]
    assert heat.metadata["lassim_score"] == pytest.approx(np.mean(per_slice), abs=1e-9)
    assert "level 2 (level 3 does not fit)" in heat.metadata["lassim_mode"]


def test_heatmap_bad_input_notifies(make_napari_viewer, qtbot, notifications, camera64):
    viewer = make_napari_viewer()
    viewer.add_image(camera64, name="a")
    viewer.add_image(camera64[:40], name="b")
    widget = _dock(viewer)
    widget.original.value, widget.enhanced.value = viewer.layers["a"], viewer.layers["b"]
    _run(qtbot, widget)
    assert any("differ in size" in m for m in notification_messages(notifications, "error"))
    assert "b LaSSIM" not in viewer.layers

    # too small for the level: the largest level that fits, said in the score line
    widget.original.value, widget.enhanced.value = viewer.layers["a"], viewer.layers["a"]
    widget.level.value = 5
    _run(qtbot, widget)
    assert "level 3 (level 5 does not fit)" in viewer.layers["a LaSSIM"].metadata["lassim_mode"]
    # too small for any level: a clear message, no layer
    viewer.add_image(camera64[:5, :5], name="c")
    widget.reset_choices()
    widget.original.value, widget.enhanced.value = viewer.layers["c"], viewer.layers["c"]
    _run(qtbot, widget)
    assert any("too small for LaSSIM" in m for m in notification_messages(notifications, "error"))
    assert "c LaSSIM" not in viewer.layers
