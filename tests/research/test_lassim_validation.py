"""The LaSSIM validation experiment: its building blocks and a small run on real images."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from skimage import data

from napari_uspmie import lassim
from napari_uspmie.research.degradations import box_blur, elastic_deform
from napari_uspmie.research.lassim_validation import (
    area_resize,
    builtin_sources,
    run_experiment,
    score_image,
    to_unit_image,
)
from napari_uspmie.research.lassim_validation_report import jensen_shannon


def test_area_resize_is_inter_area_when_shrinking(retina):
    image = retina.astype(np.float64) / 255.0
    for size in [(320, 320), (272, 480), (97, 131)]:
        expected = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(area_resize(image, size), expected, atol=1e-6)  # OpenCV: float32 weights
    gray = image[..., 0]
    np.testing.assert_allclose(
        area_resize(gray, (100, 100)), cv2.resize(gray, (100, 100), interpolation=cv2.INTER_AREA), atol=1e-6
    )
    small = image[:50, :60]
    up = area_resize(small, (100, 90))  # enlarging: linear, values stay in range
    assert up.shape == (100, 90, 3) and up.min() >= small.min() - 1e-12 and up.max() <= small.max() + 1e-12


def test_to_unit_image_layouts():
    rgba = np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])
    np.testing.assert_array_equal(to_unit_image(rgba, {"channel_axis": -1}), data.astronaut() / 255.0)
    u16 = data.camera().astype(np.uint16) * 100 + 1000
    unit = to_unit_image(u16, {"channel_axis": None})
    assert unit.min() == 0.0 and unit.max() == 1.0 and unit.shape == (512, 512)
    volume = np.random.default_rng(0).random((5, 70, 80))
    np.testing.assert_allclose(
        to_unit_image(volume, {"channel_axis": None}), (volume[2] - volume[2].min()) / np.ptp(volume[2])
    )
    for constant in (np.full((80, 80), 7.0), np.zeros((80, 80), np.uint8)):  # e.g. an empty slice
        with pytest.raises(ValueError, match="constant"):
            to_unit_image(constant)
    with pytest.raises(ValueError, match="NaN"):
        to_unit_image(np.full((80, 80), np.nan))


def test_jensen_shannon_bounds():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.02, 200)
    assert jensen_shannon(a, a) == pytest.approx(0.0, abs=1e-12)
    b = rng.normal(0.5, 0.02, 200)
    assert jensen_shannon(a, b) == pytest.approx(1.0, abs=1e-3)
    c = rng.normal(0.78, 0.02, 200)
    assert 0.05 < jensen_shannon(a, c) < 0.9
    assert jensen_shannon(a, c) == pytest.approx(jensen_shannon(c, a))


def test_retina_blur_vs_deformation(retina_480x272):
    """METHOD.md's measurement: retina 480x272, blur 17, elastic sigma 2.5 alpha 25."""
    gt = retina_480x272.astype(np.float64) / 255.0
    blurred = box_blur(gt, 17)
    assert lassim(blurred, gt) == pytest.approx(0.93168, abs=1e-4)
    deformed = [box_blur(elastic_deform(gt, 25.0, 2.5, seed=s), 17) for s in range(3)]
    lassim_deformed = np.mean([lassim(d, gt) for d in deformed])
    assert 0.895 < lassim_deformed < 0.92  # 0.9097 in METHOD.md; a few fields vary by ~0.003
    scores = score_image(gt, np.random.default_rng(0), blur_sizes=(17,), alphas=(25.0,))
    assert scores["lassim_blur"][0] == pytest.approx(0.93168, abs=1e-4)
    assert scores["lassim_blur"][0] - scores["lassim_deform_blur"][0, 0] > 0.01
    assert abs(scores["ssim_blur"][0] - scores["ssim_deform_blur"][0, 0]) < 0.005  # SSIM barely moves


def test_small_run_separates_with_lassim_not_ssim(tmp_path):
    sources = [
        s
        for s in builtin_sources(mni_slices=(60, 90))
        if s[0].split("/")[-1]
        in {
            "camera.png",
            "coins.png",
            "astronaut.png",
            "brick.png",
            "coffee.png",
            "moon.png",
            "axial_060",
            "axial_090",
        }
    ]
    assert len(sources) == 8
    summary = run_experiment(sources, tmp_path, size=112, level=3, seed=1, progress=False)
    assert len(summary["images"]) == 8 and not summary["skipped"]
    with open(tmp_path / "jsd.csv") as f:
        rows = {(r["alpha"], r["blur"]): r for r in csv.DictReader(f)}
    assert len(rows) == 9
    main = rows[("25", "17")]
    assert float(main["lassim_jsd"]) > float(main["ssim_jsd"])
    lassim_jsd = np.mean([float(r["lassim_jsd"]) for r in rows.values()])
    ssim_jsd = np.mean([float(r["ssim_jsd"]) for r in rows.values()])
    assert lassim_jsd > 0.05 and lassim_jsd > 5 * ssim_jsd
    # per image, LaSSIM ranks blur-only above deform+blur more often than SSIM does
    assert np.mean([float(r["lassim_separated"]) for r in rows.values()]) > np.mean(
        [float(r["ssim_separated"]) for r in rows.values()]
    )
    assert (tmp_path / "density_Mdef_Hblur.png").stat().st_size > 10_000
    assert "| M (25) | H (17) |" in summary["table"]


def test_builtin_sources_are_real_images():
    sources = dict(builtin_sources(mni_slices=(90,)))
    assert any(name.startswith("skimage/") for name in sources)
    array, meta = sources["mni152/axial_090"]()
    assert array.shape == (233, 197) and array.dtype == np.uint8 and array.max() > 100
