"""The shipped generator does no harm on a clean scan it never saw.

nibabel's ``anatomical.nii`` (a 2 mm T1 of another subject, held out of the training data) goes
through the path every face takes (scope check, resampling to the model's pixel size, structure
guard) and must come back nearly unchanged: its structure (LaSSIM at level 1) and its dark areas
(ventricles, sulci: the share of the head darker than 30% of its 95th percentile, which the
shipped model once grew on this scan, dark blobs over tissue).
"""

from __future__ import annotations

import numpy as np

from napari_uspmie.inference.checked import enhance_checked
from napari_uspmie.inference.enhancer import load_enhancer
from napari_uspmie.inference.pipeline import slice_spacing
from napari_uspmie.io.readers import read_image
from napari_uspmie.research.evaluation import dark_fraction, head_mask
from tests.io_factories import ANATOMICAL


def test_shipped_model_leaves_a_held_out_clean_scan_nearly_unchanged():
    image, meta = read_image(ANATOMICAL)
    result = enhance_checked(
        load_enhancer(device="cpu"), image, source=ANATOMICAL.name, spacing=slice_spacing(meta), modality="MR"
    )
    assert result.output.shape == image.shape and result.output.dtype == image.dtype
    level1 = np.array(result.verdict.lassim[1], dtype=np.float64)
    assert level1.mean() >= 0.9, f"LaSSIM(in, out) at level 1: mean {level1.mean():.3f}, min {level1.min():.3f}"
    assert result.verdict.kept, result.verdict.summary()
    changes = []
    top = np.percentile(image, 99.5)
    for before, after in zip(image.astype(np.float64), result.output.astype(np.float64), strict=True):
        head = head_mask(np.clip(before / top, 0, 1))
        if head.mean() >= 0.3 and dark_fraction(before, head) > 0.01:
            changes.append(dark_fraction(after, head) / dark_fraction(before, head) - 1)
    changes = np.array(changes)
    assert len(changes) >= 10
    within = np.mean(np.abs(changes) <= 0.15)
    assert within >= 0.75 and abs(np.median(changes)) <= 0.15, (
        f"dark-area change: median {np.median(changes):+.2f}, {within:.0%} within 15%"
    )
