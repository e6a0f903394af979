"""The shipped generator does no harm on a clean scan it never saw.

nibabel's ``anatomical.nii`` (a 2 mm T1 of another subject, held out of the training data) goes
through the path every face takes (scope check, resampling to the model's pixel size, structure
guard) and must come back nearly unchanged.
"""

from __future__ import annotations

import numpy as np

from napari_uspmie.inference.checked import enhance_checked
from napari_uspmie.inference.enhancer import load_enhancer
from napari_uspmie.inference.pipeline import slice_spacing
from napari_uspmie.io.readers import read_image
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
