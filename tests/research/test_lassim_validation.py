"""The LaSSIM validation experiment: its building blocks and a small run on real images."""

from __future__ import annotations

import csv
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from napari_uspmie import lassim
from napari_uspmie.cli.main import main as cli_main
from napari_uspmie.research.degradations import box_blur, elastic_deform
from napari_uspmie.research.lassim_validation import (
    area_resize,
    builtin_sources,
    run_experiment,
    score_image,
    to_unit_image,
)
from napari_uspmie.research.lassim_validation_report import REPORT_FILES, jensen_shannon


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


def test_jensen_shannon_of_single_scores_warns_not():
    # One image gives two narrow spikes: the mixture of their far tails underflowed to 0 (divide by zero).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jensen_shannon([0.9], [0.8]) == pytest.approx(1.0, abs=1e-6)
        assert jensen_shannon([0.9], [0.9]) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture
def image_folder(tmp_path):
    """One usable photograph, one file that is no image and one constant image."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(cv2.resize(data.camera(), (80, 80), interpolation=cv2.INTER_AREA)).save(folder / "a.png")
    (folder / "b.png").write_text("not an image")
    Image.fromarray(np.full((80, 80), 9, np.uint8)).save(folder / "c.png")
    return folder


def _contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _experiment(images, out, *options):
    return cli_main(["lassim-experiment", str(images), "--out", str(out), "--size", "64", *options])


def test_command_names_each_bad_image_and_exits_1(image_folder, tmp_path, capsys):
    inputs = _contents(image_folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _experiment(image_folder, tmp_path / "report") == 1
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {image_folder / 'b.png'}: ") and "unreadable" in errors[0]
    assert errors[1].startswith(f"error: {image_folder / 'c.png'}: ") and "constant" in errors[1]
    assert "2 of 3 images could not be used" in err and "Traceback" not in err
    assert set(_contents(tmp_path / "report")) == set(REPORT_FILES)
    assert _contents(image_folder) == inputs  # inputs are never written to
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "report"]  # no temporary folder left


def test_command_never_replaces_a_report_silently(image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert _experiment(image_folder, out) == 1
    first = _contents(out)
    capsys.readouterr()
    assert _experiment(image_folder, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {out}: already holds" in err and "--overwrite" in err
    assert _contents(out) == first
    assert _experiment(image_folder, out, "--overwrite") == 1
    assert set(_contents(out)) == set(REPORT_FILES)
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _experiment(image_folder, out, "--overwrite") == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"


def test_command_refuses_unusable_outputs_and_options_before_any_work(image_folder, tmp_path, capsys):
    existing = tmp_path / "existing_file"
    existing.write_text("keep")
    assert _experiment(image_folder, existing) == 2
    err = capsys.readouterr().err
    assert err == f"error: {existing}: exists and is not a folder; give lassim-experiment the name of a new folder.\n"
    assert existing.read_text() == "keep"
    assert _experiment(image_folder, image_folder / "report") == 2  # later runs would score its plots
    assert "inside the image folder" in capsys.readouterr().err
    for option in (["--threads", "-1"], ["--limit", "-1"], ["--limit", "0"], ["--seed", "-1"], ["--sigma", "0"]):
        with pytest.raises(SystemExit) as stop:
            _experiment(image_folder, tmp_path / "new", *option)
        assert stop.value.code == 2
        assert f"argument {option[0]}: must be" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_file", "images"]
