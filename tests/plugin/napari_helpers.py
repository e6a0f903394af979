"""Helpers shared by the napari tests."""

from __future__ import annotations

import torch

from napari_uspmie.models.networks import ResnetGenerator
from tests.unpaired_data import TINY_GENERATOR as TINY

PLUGIN = "napari-uspmie"


def notification_messages(seen: list, severity: str) -> list[str]:
    """Messages of the notifications in ``seen`` whose severity name ends with ``severity``."""
    return [str(n.message) for n in seen if str(n.severity).lower().endswith(severity)]


def save_checkpoint(path, kwargs=TINY, seed=0):
    """A trainer-style checkpoint of a random-init generator (what inference loads)."""
    torch.manual_seed(seed)
    net = ResnetGenerator(**kwargs)
    torch.save({"generator_ab": net.state_dict(), "network_def_kwargs": dict(kwargs)}, path)
    return path


def dock_enhance_widget(viewer, checkpoint=None):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Enhance (LaMEGAN)")
    widget.device.value = "cpu"
    if checkpoint is not None:
        widget.model.value = "checkpoint"
        widget.model_path.value = str(checkpoint)
    return widget


def run_enhance(qtbot, widget, layer):
    widget.image.value = layer
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    return worker
