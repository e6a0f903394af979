"""The structure guard's verdicts: identity kept, moved or invented structure, grids and NaN caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_uspmie.metric.lassim import lassim
from napari_uspmie.metric.structure_check import StructureThresholds, check_structure, local_lassim, noise_level
from tests.io_factories import mni_slices


@pytest.fixture(scope="module")
def brains() -> np.ndarray:
    return mni_slices(4, 2).astype(np.float64)[:, None]  # (4, 1, H, W), H and W above 90


def blob_of(image: np.ndarray) -> np.ndarray:
    """``image`` (one slice) with a dark blob of radius 8 in its middle, where tissue was."""
    blob = image.copy()
    h, w = image.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 < 8**2
    blob[0, 0][inside] = ndimage.gaussian_filter(image[0, 0], 1)[inside] * 0.1
    return blob


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


def test_noise_level_reads_the_noise_in_any_units(brains):
    rng = np.random.default_rng(0)
    clean = brains[:1] / brains.max()
    span = float(np.subtract(*np.percentile(clean, [99.5, 0.5])))
    levels = []
    for sigma in (0.0, 0.02, 0.05):
        noisy = clean + rng.normal(0, sigma, clean.shape)
        levels.append(float(noise_level(noisy)[0]))
        assert noise_level(noisy * 1000 + 7)[0] == pytest.approx(levels[-1], rel=1e-6)  # units do not matter
    assert levels[0] < 0.01 < levels[1] < levels[2]
    assert levels[2] == pytest.approx(0.05 / span, rel=0.35)  # the noise's size, relative to the range
    assert noise_level(np.full((1, 1, 8, 8), 3.0))[0] == 0.0


def test_thresholds_by_input_noise_hold_clean_slices_to_more(brains):
    rng = np.random.default_rng(1)
    clean = brains[:2] / brains.max()
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    smoothed = ndimage.gaussian_filter(clean, (0, 0, 1.2, 1.2))  # what denoising does to fine bands
    banded = StructureThresholds({1: 0.2, 2: 0.2, 3: 0.2}, by_noise=((0.01, {1: 0.95, 2: 0.95, 3: 0.95}),))
    on_clean = check_structure(clean, smoothed, banded)
    on_noisy = check_structure(noisy, ndimage.gaussian_filter(noisy, (0, 0, 1.2, 1.2)), banded)
    assert not on_clean.kept and "< 0.95" in on_clean.reasons[0]
    assert on_noisy.kept, on_noisy.reasons
    assert max(on_clean.noise) < 0.01 < min(on_noisy.noise)
    # the bands travel through the bundle's metadata and back
    metadata = json.loads(json.dumps({"structure_thresholds": banded.as_dict()}))
    assert StructureThresholds.from_metadata(metadata) == banded
    falling = {"min_lassim": {"1": 0.3}, "by_noise": [{"noise_below": 0.02, "min_lassim": {"1": 0.9}}] * 2}
    with pytest.raises(ValueError, match="noise bands must rise"):
        StructureThresholds.from_metadata({"structure_thresholds": falling})


def test_local_lassim_finds_a_blob_the_slice_score_averages_away(brains):
    """A dark blob over one region (a ventricle grown into tissue) barely moves the slice's LaSSIM,
    while the worst region's score drops; identity scores 1 everywhere."""
    image, blob = brains[:1], blob_of(brains[:1])
    for level in (1, 2):
        same = local_lassim(image, image, level)
        assert same.shape == (1,) and same[0] == pytest.approx(1.0)
        whole = lassim(blob[0, 0], image[0, 0], level=level)
        local = local_lassim(blob, image, level)[0]
        assert whole > 0.85 and local < whole - 0.2, (level, whole, local)


def test_local_lassim_of_a_band_smaller_than_a_region_is_the_score(brains):
    small = brains[:2, :, :40, :40]
    rng = np.random.default_rng(0)
    noisy = small + rng.normal(0, 8, small.shape)
    local = local_lassim(noisy, small, 2)
    expected = [lassim(noisy[i, 0], small[i, 0], level=2) for i in range(2)]
    np.testing.assert_allclose(local, expected, rtol=1e-6)


def test_allowed_flagged_slices_follow_the_binomial_tail():
    from scipy import stats

    thresholds = StructureThresholds(slice_false_alarm=0.05)
    assert thresholds.allowed_flagged(1) == 0  # one image: its one slice decides
    for n in (2, 4, 10, 59, 104, 400):
        k = thresholds.allowed_flagged(n)
        assert stats.binom.sf(k, n, 0.05) <= 0.05 + 1e-9 < stats.binom.sf(k - 1, n, 0.05) + (k == 0), n
    assert StructureThresholds().allowed_flagged(104) == 0  # no rate stored: any flagged slice counts
    assert StructureThresholds(slice_false_alarm=0.05).allowed_flagged(10_000) > 450  # no overflow


def test_a_volume_is_lost_by_too_many_flagged_slices_or_one_severe_one(brains):
    volume = np.concatenate([brains] * 3)  # 12 slices: a good enhancement may show 2 flagged at 5%
    mild = volume.copy()
    mild[[3, 8]] = ndimage.gaussian_filter(volume[[3, 8]], (0, 0, 0.7, 0.7))
    levels = {1: 0.99, 2: 0.99, 3: 0.99}
    counted = StructureThresholds(levels, slice_false_alarm=0.05)
    assert counted.allowed_flagged(12) == 2
    verdict = check_structure(volume, mild, counted)
    assert verdict.kept and verdict.flagged_slices == [3, 8], verdict.reasons
    assert "2 slices below the per-slice thresholds" in verdict.summary() and "3, 8" in verdict.summary()
    assert not check_structure(volume, mild, StructureThresholds(levels)).kept  # no rate: one slice loses
    worse = volume.copy()
    worse[[1, 3, 8]] = ndimage.gaussian_filter(volume[[1, 3, 8]], (0, 0, 0.7, 0.7))
    counted_out = check_structure(volume, worse, counted)
    assert not counted_out.kept and counted_out.reasons[0].startswith("3 of 12 slices below the per-slice")
    moved = volume.copy()
    moved[5, 0] = ndimage.shift(volume[5, 0], (6, -5), order=1)
    severe = StructureThresholds({1: 0.3, 2: 0.3, 3: 0.3}, slice_false_alarm=0.05, severe_lassim={1: 0.8})
    alone = check_structure(volume, moved, severe)
    assert not alone.kept and alone.flagged_slices == [5] and "severe" in alone.reasons[0], alone.reasons
    assert "severe" in alone.summary()


def test_the_worst_region_flags_a_blob_the_slice_scores_pass(brains):
    image, blob = brains[:1], blob_of(brains[:1])
    slice_only = StructureThresholds({1: 0.8, 2: 0.8, 3: 0.8})
    assert check_structure(image, blob, slice_only).kept
    regional = StructureThresholds({1: 0.8, 2: 0.8, 3: 0.8}, min_local_lassim=0.7)
    verdict = check_structure(image, blob, regional)
    assert not verdict.kept and "a region's LaSSIM" in verdict.reasons[0] and verdict.local[0] < 0.7
    assert check_structure(image, image, regional).kept
    metadata = json.loads(
        json.dumps(
            {
                "structure_thresholds": StructureThresholds(
                    levels := {1: 0.9, 2: 0.8, 3: 0.7},
                    min_local_lassim=0.5,
                    slice_false_alarm=0.05,
                    severe_lassim={1: 0.6, 2: 0.5, 3: 0.4},
                    severe_local_lassim=0.1,
                ).as_dict()
            }
        )
    )
    back = StructureThresholds.from_metadata(metadata)
    assert back.min_lassim == levels and back.min_local_lassim == 0.5 and back.severe_local_lassim == 0.1
    assert back.severe_lassim == {1: 0.6, 2: 0.5, 3: 0.4} and back.slice_false_alarm == 0.05
    with pytest.raises(ValueError, match="slice_false_alarm"):
        StructureThresholds.from_metadata({"structure_thresholds": {"slice_false_alarm": 1.5}})
