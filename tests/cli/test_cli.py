"""The command line, run as users run it: ``python -m napari_uspmie ...`` on real files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from skimage import data

from napari_uspmie import lassim
from napari_uspmie.cli.main import COMMANDS, main


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_uspmie", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def png_pair(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("pngs")
    clean = cv2.resize(data.retina(), (240, 136), interpolation=cv2.INTER_AREA)
    blurred = cv2.blur(clean, (9, 9))
    Image.fromarray(clean).save(folder / "clean.png")
    Image.fromarray(blurred).save(folder / "blurred.png")
    return folder / "blurred.png", folder / "clean.png", blurred, clean


def test_lassim_command_prints_score_and_writes_heatmap(png_pair, tmp_path):
    blurred, clean, blurred_arr, clean_arr = png_pair
    heatmap = tmp_path / "maps" / "heat.png"
    result = run_cli("lassim", str(blurred), str(clean), "--level", "2", "--heatmap", str(heatmap), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    score = float(re.search(r"LaSSIM = ([0-9.]+)", result.stdout).group(1))
    assert score == pytest.approx(lassim(blurred_arr, clean_arr, level=2), abs=1e-6)
    with Image.open(heatmap) as im:  # a real PNG, larger than the image thanks to the colour bar
        assert im.format == "PNG" and im.size[0] > 300
    assert not list(heatmap.parent.glob(".*"))  # no temporary left behind


def test_lassim_heatmap_never_replaces_an_input_or_an_existing_file_unasked(png_pair, tmp_path):
    blurred, clean, _, _ = png_pair
    before = {p: p.read_bytes() for p in (blurred, clean)}
    existing = tmp_path / "heat.png"
    existing.write_bytes(b"keep me")
    result = run_cli("lassim", str(blurred), str(clean), "--heatmap", str(existing), cwd=tmp_path)
    assert result.returncode == 2 and "already exists; pass --overwrite" in result.stderr
    assert existing.read_bytes() == b"keep me" and "LaSSIM =" not in result.stdout  # refused before any work
    for target in (blurred, clean):
        result = run_cli("lassim", str(blurred), str(clean), "--heatmap", str(target), "--overwrite", cwd=tmp_path)
        assert result.returncode == 2 and "is one of the images compared" in result.stderr
    assert {p: p.read_bytes() for p in (blurred, clean)} == before
    result = run_cli("lassim", str(blurred), str(clean), "--heatmap", str(existing), "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert existing.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--level", "9", "must be a whole number from 0 to 8, got 9"), ("--max-level", "x", "got 'x'")],
)
def test_lassim_option_values_are_checked_when_parsed(png_pair, tmp_path, option, value, message):
    blurred, clean, _, _ = png_pair
    result = run_cli("lassim", str(blurred), str(clean), option, value, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_lassim_command_rejects_different_shapes(png_pair, tmp_path):
    blurred, _, _, _ = png_pair
    other = tmp_path / "other.png"
    Image.fromarray(data.camera()).save(other)
    result = run_cli("lassim", str(blurred), str(other), cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr and str(blurred) in result.stderr and str(other) in result.stderr
    assert "Traceback" not in result.stderr


def test_lassim_command_names_unusable_pairs(png_pair, tmp_path):
    """A figure format the heatmap cannot take is refused before the work; NaN is named with its file;
    pairs that cannot be compared as they are (other units, no structure) are scored with a warning."""
    blurred, clean, _, clean_array = png_pair
    result = run_cli("lassim", str(blurred), str(clean), "--heatmap", str(tmp_path / "map.nii.gz"), cwd=tmp_path)
    assert result.returncode == 2 and "map.nii.gz: --heatmap writes a figure; give a name ending in" in result.stderr
    grey = clean_array.mean(axis=2).astype(np.float32)
    nan = grey.copy()
    nan[3, 4] = np.nan
    for name, array in (("nan.nii.gz", nan), ("grey.nii.gz", grey), ("grey16.nii.gz", grey * 257)):
        nib.save(nib.Nifti1Image(array.T[:, :, None], np.eye(4)), str(tmp_path / name))
    result = run_cli("lassim", "nan.nii.gz", "grey.nii.gz", cwd=tmp_path)
    assert result.returncode == 2 and "nan.nii.gz: image holds 1 NaN/Inf values" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("lassim", "grey16.nii.gz", "grey.nii.gz", cwd=tmp_path)
    assert result.returncode == 0 and "LaSSIM = " in result.stdout
    assert re.search(r"warning: grey16.nii.gz spans \S+ but grey.nii.gz spans \S+ in value", result.stderr)
    assert "warning" not in run_cli("lassim", str(blurred), str(clean), cwd=tmp_path).stderr
    for name, value in (("black.png", 0), ("white.png", 255)):
        Image.fromarray(np.full((64, 64), value, np.uint8)).save(tmp_path / name)
    result = run_cli("lassim", "black.png", "white.png", cwd=tmp_path)
    assert result.returncode == 0 and "warning: black.png and white.png: flat (one value)" in result.stderr


def test_lassim_command_volumes(tmp_path, capsys):
    """NIfTI volumes: scored slice by slice (the one rule); the heatmap shows the middle slice."""
    nifti = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    img = nib.load(nifti)
    vol = np.asarray(img.dataobj, dtype=np.float32)
    noisy = vol + np.random.default_rng(0).normal(0, 0.05 * vol.std(), vol.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(noisy, img.affine), tmp_path / "noisy.nii.gz")
    heatmap = tmp_path / "h.png"
    assert main(["lassim", str(tmp_path / "noisy.nii.gz"), str(nifti), "--level", "1", "--heatmap", str(heatmap)]) == 0
    assert heatmap.stat().st_size > 0
    capsys.readouterr()
    # the default level needs 49 pixels a side: the largest level that fits, and the output says so
    assert main(["lassim", str(tmp_path / "noisy.nii.gz"), str(nifti)]) == 0
    printed = capsys.readouterr().out
    assert "level 2 of 5" in printed and "level 3 does not fit" in printed
    tiny = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(vol[:6, :6, :4], img.affine), tiny)
    assert main(["lassim", str(tiny), str(tiny)]) == 2  # no level fits 6 x 6 slices: a clear error
    assert "too small for LaSSIM" in capsys.readouterr().err


def test_errors_are_messages_not_tracebacks(png_pair, tmp_path, capsys):
    blurred, clean, _, _ = png_pair
    assert main(["lassim", str(blurred), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["lassim", str(text), str(clean)]) == 2
    assert "notes.png" in capsys.readouterr().err
    assert main(["lassim", str(blurred), str(clean), "--level", "6"]) == 2
    assert "level" in capsys.readouterr().err
    assert main(["lassim-experiment", "--out", str(tmp_path / "r")]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["lassim-experiment", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["lassim-experiment", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no image files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: unknown command
        main(["no-such-command"])
    assert exc.value.code == 2


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd.name in out


def test_experiment_command_on_a_folder(tmp_path):
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for name, image in [("camera", data.camera()[::2, ::2]), ("coins", data.coins())]:
        Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(data.retina()[::8, ::8]).save(folder.parent / "retina.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated
    out = tmp_path / "report"
    result = run_cli("lassim-experiment", str(tmp_path / "images"), "--out", str(out), "--size", "96", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a file could not be scored: said, and the others still run
    assert f"error: {folder / 'broken.png'}:" in result.stderr and "Traceback" not in result.stderr
    for name in ("scores.csv", "jsd.csv", "report.md", "density_Mdef_Hblur.png", "density_grid.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 9 and {r["image"] for r in rows} == {"retina.jpg", "nested/camera.png", "nested/coins.png"}
    report = (out / "report.md").read_text()
    assert "nested/broken.png" in report and "| M (25) | H (17) |" in report
    assert "lassim-experiment" in result.stderr  # the progress bar
