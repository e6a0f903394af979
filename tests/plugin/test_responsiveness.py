"""The GUI stays responsive while a large enhancement runs in the widget's worker thread.

A 10 ms QTimer runs in the GUI thread while a volume is enhanced with the shipped
architecture; the longest gap between two of its ticks is how long napari could not process
events (paint, mouse, keyboard). It must stay under 200 ms from the start of the run to the
last network call. A first, small run loads the model beforehand: the first load in a
session also imports MONAI, whose import holds the GIL in stretches (reported, not asserted).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from napari_uspmie.models.networks import ResnetGenerator
from tests.io_factories import SHIPPED

pytestmark = pytest.mark.gui

MAX_GAP_S = 0.2
#: (slices, rows, columns) of the first measured run (doubled in slices until a run lasts 1 s);
#: override to measure bigger volumes
SHAPE = tuple(int(v) for v in os.environ.get("USPMIE_RESPONSIVENESS_SHAPE", "16,256,256").split(","))


class _Ticks:
    """Timestamps of a 10 ms QTimer in the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def longest_gap(self, start: float, end: float) -> float:
        inside = [t for t in self.times if start <= t <= end]
        return float(np.diff([start, *inside, end]).max())


def _run_and_measure(qtbot, widget, layer, ticks: _Ticks) -> tuple[float, float]:
    """Run the widget on ``layer``; return (run seconds, longest GUI gap until the last network call)."""
    last_progress: list[float] = []
    widget.image.value = layer
    start = time.perf_counter()
    worker = widget.run()
    assert worker is not None
    widget._relay.progressed.connect(lambda done, total: last_progress.append(time.perf_counter()))
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    end = last_progress[-1] if last_progress else time.perf_counter()
    return end - start, ticks.longest_gap(start, end)


def test_gui_event_loop_keeps_ticking_during_enhancement(make_napari_viewer, qtbot, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    torch.save({"generator_ab": ResnetGenerator(**SHIPPED).state_dict(), "network_def_kwargs": SHIPPED}, checkpoint)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    small = viewer.add_image(rng.normal(100, 20, (32, 32)).astype(np.float32), name="small")
    _, widget = viewer.window.add_plugin_dock_widget("napari-uspmie", "Enhance (LaMEGAN)")
    widget.device.value = "cpu"
    widget.model.value = "checkpoint"
    widget.model_path.value = str(checkpoint)

    ticks = _Ticks()
    ticks.timer.start()
    qtbot.wait(50)
    load_s, load_gap = _run_and_measure(qtbot, widget, small, ticks)
    print(f"\nfirst load + small run: {load_s:.2f} s, longest GUI gap {1000 * load_gap:.0f} ms")
    # A run must last long enough to say something: on a faster machine the volume doubles until it does.
    shape, gaps = SHAPE, []
    for _ in range(4):
        large = viewer.add_image(rng.normal(100, 20, shape).astype(np.float32), name=f"large {shape[0]}")
        run_s, run_gap = _run_and_measure(qtbot, widget, large, ticks)
        gaps.append(run_gap)
        print(
            f"enhancing {shape} with torch threads {widget_threads()}: {run_s:.2f} s, "
            f"longest GUI gap {1000 * run_gap:.0f} ms"
        )
        assert f"{large.name} enhanced" in viewer.layers
        if run_s > 1.0:
            break
        shape = (2 * shape[0], *shape[1:])
    ticks.timer.stop()
    assert run_s > 1.0, "the run was too short to say anything about responsiveness"
    assert max(gaps) < MAX_GAP_S, f"GUI blocked for {1000 * max(gaps):.0f} ms during an enhancement"


def widget_threads() -> int:
    from napari_uspmie.plugin.enhance_widget import worker_threads

    return worker_threads()
