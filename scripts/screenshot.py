"""Make the README screenshot: napari with both plugin widgets docked, an enhanced brain MRI
and its LaSSIM heatmap.

Runs headless: without a ``DISPLAY`` it starts a virtual X server (Xvfb, through
PyVirtualDisplay, which pytest-xvfb installs). The sample volume (MNI152 T1, degraded) is
enhanced through the "Enhance (LaMEGAN)" widget exactly as a user would, then compared
with the "LaSSIM heatmap" widget.

Usage::

    python scripts/screenshot.py                       # shipped bundle's trained model
    python scripts/screenshot.py --checkpoint runs/x/model.pt --out /tmp/shot.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="weights file (default: the shipped bundle's model)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "napari_screenshot.png")
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1000), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--level", type=int, default=3, help="LaSSIM pyramid level")
    return parser.parse_args(argv)


def _wait(app, widget, what: str, timeout_s: float = 1800.0) -> None:
    """Process Qt events until ``widget`` is idle (its work runs in a napari thread worker)."""
    deadline = time.monotonic() + timeout_s
    while widget.busy:
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")


def make_screenshot(args: argparse.Namespace) -> Path:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_uspmie.plugin.sample_data import brain_mri_degraded

    viewer = napari.Viewer(title="napari-uspmie")
    viewer.window.resize(*args.size)
    for data, kwargs, _ in brain_mri_degraded():
        viewer.add_image(data, **kwargs)
    clean, degraded = viewer.layers["MNI152 T1"], viewer.layers["MNI152 T1 degraded"]
    _, enhance = viewer.window.add_plugin_dock_widget("napari-uspmie", "Enhance (LaMEGAN)")
    _, heatmap = viewer.window.add_plugin_dock_widget("napari-uspmie", "LaSSIM heatmap")
    app = QApplication.instance()

    enhance.image.value = degraded
    if args.checkpoint is not None:
        enhance.model.value = "checkpoint"
        enhance.model_path.value = str(args.checkpoint)
    if enhance.run() is None:
        raise SystemExit("error: the enhancement did not start (see the message above).")
    _wait(app, enhance, "the enhancement")
    name = f"{degraded.name} enhanced"
    if name not in viewer.layers:
        raise SystemExit(f"error: the enhancement failed: {enhance.status.value}")

    heatmap.original.value = degraded
    heatmap.enhanced.value = viewer.layers[name]
    heatmap.level.value = args.level
    heatmap.compute()
    _wait(app, heatmap, "the heatmap")

    # degraded input on the left, the enhanced image under its heatmap on the right
    clean.visible = False
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9 moved it
    grid.enabled = True
    grid.stride = 2
    viewer.layers.move(viewer.layers.index(clean), 0)
    viewer.layers.selection.active = viewer.layers[f"{name} LaSSIM"]
    viewer.dims.set_point(0, 0.0)  # the axial plane through the MNI origin
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    viewer.reset_view()
    app.processEvents()

    image = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(image).save(args.out)
    viewer.close()
    return args.out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=tuple(args.size), color_depth=24)
        display.start()
    try:
        out = make_screenshot(args)
    finally:
        if display is not None:
            display.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
