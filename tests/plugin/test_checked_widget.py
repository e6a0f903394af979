"""The enhance widget's checked path under Xvfb: scope refusal and override, pixel size from the
file, structure-loss policies with the automatic heatmap."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from tests.io_factories import mni_slices, write_dicom_series
from tests.plugin.napari_helpers import dock_enhance_widget, notification_messages, run_enhance

pytestmark = pytest.mark.gui


def _read_layer(viewer, path):
    from napari_uspmie.plugin.reader import napari_get_reader

    (data_, kwargs, _), *_ = napari_get_reader(str(path))(str(path))
    return viewer.add_image(data_, **kwargs)


def test_ct_series_is_refused_until_allowed(make_napari_viewer, qtbot, tmp_path, notifications):
    write_dicom_series(tmp_path / "ct", mni_slices(3, 2).astype(np.int16) * 4 - 1000, modality="CT")
    viewer = make_napari_viewer()
    layer = _read_layer(viewer, tmp_path / "ct")
    widget = dock_enhance_widget(viewer)  # the shipped MR model
    run_enhance(qtbot, widget, layer)
    errors = notification_messages(notifications, "error")
    assert any("outside this model's scope: modality CT" in m for m in errors), errors
    assert len(viewer.layers) == 1 and widget.status.value == "failed"
    widget.allow_out_of_scope.value = True
    run_enhance(qtbot, widget, layer)
    result = viewer.layers[f"{layer.name} enhanced"]
    report = result.metadata["enhancement"]
    assert report["scope_problems"] == ["modality CT (the model was trained on MR)"]
    assert report["resample_factors"] == pytest.approx([0.8, 0.7])  # the series' 0.8 x 0.7 mm pixels
    assert any("out of the model's scope" in m for m in notification_messages(notifications, "warning"))


def test_structure_loss_warns_with_a_heatmap_keeps_the_input_or_adds_nothing(
    make_napari_viewer, qtbot, notifications, tiny_checkpoint
):
    viewer = make_napari_viewer()
    image = transform.resize(data.camera(), (96, 96), preserve_range=True).astype(np.uint8)
    layer = viewer.add_image(image, name="camera")
    widget = dock_enhance_widget(viewer, tiny_checkpoint)  # a random network: it does not keep structure
    run_enhance(qtbot, widget, layer)
    result = viewer.layers["camera enhanced"]
    verdict = result.metadata["enhancement"]["structure"]
    assert verdict["kept"] is False and verdict["reasons"]
    heatmap = viewer.layers["camera enhanced LaSSIM"]
    assert heatmap.data.shape == image.shape and heatmap.metadata["level"] == verdict["worst"]["level"]
    assert any("structure LOST" in m for m in notification_messages(notifications, "warning"))
    assert "structure LOST" in widget.status.value

    widget.on_structure_loss.value = "keep-input"
    run_enhance(qtbot, widget, layer)
    kept = viewer.layers["camera enhanced (input kept)"]
    np.testing.assert_array_equal(kept.data, image)
    assert kept.metadata["enhancement"]["output_is_input"] is True

    widget.on_structure_loss.value = "fail"
    count = len(viewer.layers)
    run_enhance(qtbot, widget, layer)
    assert len(viewer.layers) == count
    assert any("nothing written" in m for m in notification_messages(notifications, "error"))
