"""The structure guard's verdicts: identity kept, moved or invented structure, grids and NaN caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_uspmie.metric.structure_check import StructureThresholds, check_structure
from tests.io_factories import mni_slices


@pytest.fixture(scope="module")
def brains() -> np.ndarray:
    return mni_slices(4, 2).astype(np.float64)[:, None]  # (4, 1, H, W), H and W above 90


def test_identity_and_a_mild_change_keep_structure(brains):
    same = check_structure(brains, brains)
    assert same.kept and same.reasons == []
    assert all(v == pytest.approx(1.0) for level in (1, 2, 3) for v in same.lassim[level])
    brighter = check_structure(brains, brains * 0.9 + 10)  # contrast change, same structure
    assert brighter.kept, brighter.reasons
    json.dumps(brighter.as_dict())  # the record is JSON-able


def test_moved_anatomy_is_caught_on_the_slice_it_happens(brains):
    moved = brains.copy()
    moved[2, 0] = ndimage.shift(brains[2, 0], (6, -5), order=1)  # one slice's anatomy moved 8 px
    verdict = check_structure(brains, moved)
    assert not verdict.kept
    assert verdict.worst["slice"] == 2 and all(r.startswith("slice 2:") for r in verdict.reasons)
    assert "LOST" in verdict.summary()


def test_a_drawn_checkerboard_is_caught_and_a_removed_one_is_not(brains):
    yy, xx = np.mgrid[: brains.shape[-2], : brains.shape[-1]]
    grid = 6.0 * (((yy // 2) + (xx // 2)) % 2 - 0.5)  # period 4, +-3 grey levels: visible at 1:1
    drawn = check_structure(brains, brains + grid)
    assert not drawn.kept and any("checkerboard" in r for r in drawn.reasons)
    removed = check_structure(brains + grid, brains)  # an output cleaner than its input is fine
    assert not any("checkerboard" in r for r in removed.reasons)


def test_non_finite_output_fails_and_thresholds_come_from_the_model(brains):
    broken = brains.copy()
    broken[1, 0, 10, 10] = np.nan
    verdict = check_structure(brains, broken)
    assert not verdict.kept and "NaN" in verdict.reasons[0] and verdict.worst == {"slice": 1}
    blurred = ndimage.gaussian_filter(brains, (0, 0, 1.5, 1.5))
    strict = StructureThresholds.from_metadata({"structure_thresholds": {"min_lassim": {"1": 0.99}}})
    assert strict.min_lassim == {1: 0.99} and strict.max_checkerboard_ratio == 1.5
    assert not check_structure(brains, blurred, strict).kept
    assert check_structure(brains, blurred, StructureThresholds({1: 0.0})).kept
    with pytest.raises(ValueError, match="malformed"):
        StructureThresholds.from_metadata({"structure_thresholds": {"min_lassim": [0.5]}})


def test_small_images_skip_levels_they_cannot_hold():
    small = np.random.default_rng(0).random((1, 1, 30, 30))
    verdict = check_structure(small, small)
    assert verdict.kept and verdict.lassim[3] == [None] and verdict.lassim[1][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        check_structure(small, small[..., :20])


def test_slices_too_small_to_check_are_never_reported_kept():
    image = np.random.default_rng(0).random((2, 1, 13, 40))
    tiny = image[..., :8, :]
    verdict = check_structure(tiny, tiny)  # identical, but an 8-pixel side is below LaSSIM level 1's 13
    assert not verdict.kept and not verdict.checked
    assert verdict.summary().startswith("structure NOT CHECKED: slices of 8 x 40 pixels are smaller than the 13 x 13")
    assert check_structure(image, image).checked  # 13 x 40 is large enough
