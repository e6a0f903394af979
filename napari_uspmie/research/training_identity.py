"""How much an enhancer changes the clean images it was trained against: a model choice without held-out data.

A generator that does no harm returns a clean image as it is. Domain B of the training set holds
clean slices, so a candidate (a recipe, a checkpoint) can be judged on them before the held-out
evaluation is looked at: the held-out subjects then stay a test, not a tuning set. For every
``every``-th image of ``B/`` the command runs the generator as the product does
(:func:`~napari_uspmie.research.evaluation.enhance_slice`) and reports, per model, over those images:

* **dark ok**: share of images whose dark-area fraction (head pixels below 30% of the head's 95th
  percentile) moved by at most 15%, and the mean absolute move;
* **LaSSIM(in, out) at level 1**, mean;
* **grid**: share of images whose checkerboard index rose above 1.5 times the input's.

``python -m napari_uspmie.research.training_identity DATASET_DIR --model NAME=PATH ... [--every 6]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from napari_uspmie.inference.checkpoint import load_generator
from napari_uspmie.metric.structure_check import CHECKERBOARD_FLOOR
from napari_uspmie.research.evaluation import enhance_slice, slice_metrics

__all__ = ["identity_figures", "main"]

#: largest relative move of the dark-area fraction that counts as "left alone" (the evaluation's)
DARK_TOLERANCE = 0.15
#: checkerboard index ratio (output over input) that counts as a drawn grid (the evaluation's)
GRID_RATIO = 1.5


def identity_figures(
    dataset_dir: str | Path, enhance: Callable[[np.ndarray], np.ndarray], every: int = 6
) -> dict[str, float]:
    """The module docstring's figures for one enhancer on every ``every``-th clean training image.

    Args:
        dataset_dir: a training set with a ``B/`` folder of 8-bit grey PNGs.
        enhance: maps a ``[0, 1]`` float image to the enhanced one (same shape).
        every: take every N-th image of ``B/`` (sorted by name).

    Raises:
        FileNotFoundError: no PNG in ``B/``.
    """
    files = sorted((Path(dataset_dir) / "B").glob("*.png"))[::every]
    if not files:
        raise FileNotFoundError(f"{dataset_dir}: no clean training images (B/*.png); build the dataset first.")
    rows = []
    for path in files:
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255
        rows.append(slice_metrics(enhance(image), image, image, None))
    dark = np.array([r["dark_change"] for r in rows])
    dark = dark[np.isfinite(dark)]
    grid = np.array([r["checker_out"] / max(r["checker_in"], CHECKERBOARD_FLOOR) for r in rows])
    return {
        "images": len(rows),
        "dark_ok": float(np.mean(np.abs(dark) <= DARK_TOLERANCE)) if dark.size else float("nan"),
        "dark_move": float(np.mean(np.abs(dark))) if dark.size else float("nan"),
        "lassim_in_out_1": float(np.mean([r["lassim_in_out_1"] for r in rows])),
        "grid": float(np.mean(grid > GRID_RATIO)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line of :func:`identity_figures` per ``--model``."""
    parser = argparse.ArgumentParser(prog="training-identity", description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="generator to judge")
    parser.add_argument("--every", type=int, default=6, help="every N-th clean training image (default 6)")
    args = parser.parse_args(argv)
    if not (Path(args.dataset_dir) / "B").is_dir():
        parser.exit(2, f"error: {args.dataset_dir}: no B/ folder of clean training images.\n")
    print("| model | images | dark ok | mean dark-area move | LaSSIM(in, out) L1 | grid > 1.5x |")
    print("|---|---|---|---|---|---|")
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--model expects NAME=PATH, got {spec!r}")
        net = load_generator(path)[0].eval()
        with torch.no_grad():
            f = identity_figures(args.dataset_dir, lambda x, net=net: enhance_slice(net, x), args.every)
        print(
            f"| {name} | {f['images']} | {100 * f['dark_ok']:.0f}% | {f['dark_move']:.3f} | "
            f"{f['lassim_in_out_1']:.3f} | {100 * f['grid']:.0f}% |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
