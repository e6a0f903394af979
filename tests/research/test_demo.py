"""The one-command demo: degrade a held-out volume, enhance it through the bundle, report."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from napari_uspmie.cli.main import main as cli_main
from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.io.readers import read_image
from napari_uspmie.metric.lassim import lassim
from napari_uspmie.research.demo import DEFAULT_SUBJECT, SUBJECTS, main, prepare_demo_volume
from napari_uspmie.research.mri_dataset import HELD_OUT_VOLUMES


def test_prepare_demo_volume_is_seeded_and_keeps_geometry(tmp_path):
    d1, c1 = prepare_demo_volume(tmp_path / "a", "anatomical")
    d2, _ = prepare_demo_volume(tmp_path / "b", "anatomical")
    a, b = nib.load(str(d1)), nib.load(str(d2))
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_allclose(a.affine, nib.load(str(c1)).affine)
    assert a.get_data_dtype() == np.uint8 and a.shape == (66, 82, 50)
    with pytest.raises(ValueError, match="unknown demo subject"):
        prepare_demo_volume(tmp_path / "c", "nope")
    assert "mni" in SUBJECTS
    # The README's demo runs on a subject the model never saw, not on the training template.
    assert SUBJECTS[DEFAULT_SUBJECT][:2] in HELD_OUT_VOLUMES.values()


@pytest.mark.slow
@pytest.mark.skipif(not (bundle_path() / "models" / "model.pt").exists(), reason="no shipped weights")
def test_demo_command_writes_valid_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()  # an empty folder is filled
    assert main([str(out), "--subject", "anatomical"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # written under a temporary name, then renamed
    enhanced_name = "anatomical_degraded_enhanced.nii.gz"
    enhanced = nib.load(str(out / "enhanced" / enhanced_name))
    degraded = nib.load(str(out / "input" / "anatomical_degraded.nii.gz"))
    assert enhanced.shape == degraded.shape
    np.testing.assert_allclose(enhanced.affine, degraded.affine)
    assert not np.array_equal(np.asanyarray(enhanced.dataobj), np.asanyarray(degraded.dataobj))
    with Image.open(out / "demo_figure.png") as im:
        assert im.size[0] > 600
    strict = {"parse_constant": lambda name: pytest.fail(f"report.json holds {name}, not JSON")}
    report = json.loads((out / "report.json").read_text(), **strict)
    assert report["metrics"]["enhanced"]["dark_change"] is None  # no slice of this subject has dark area
    assert report["slices"] > 10 and set(report["metrics"]) == {"degraded input", "enhanced"}
    assert report["output"] == str(out / "enhanced" / "anatomical_degraded_enhanced.nii.gz")
    with open(out / "enhanced" / "enhancement_cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["output"] for row in rows] == [str(out.absolute() / "enhanced" / enhanced_name)]
    assert rows[0]["structure"].startswith("structure "), rows[0]["structure"]  # the guard's verdict
    assert "| enhanced |" in (out / "report.md").read_text()
    assert "SSIM to clean" in capsys.readouterr().out
    # A second run into the same folder is refused before any work; nothing is rewritten.
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli_main(["demo", str(out), "--subject", "anatomical"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: already holds demo_figure.png, enhanced, input ...; ")
    assert "--overwrite" not in err  # the demo has no such option
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written


@pytest.mark.slow
@pytest.mark.skipif(not (bundle_path() / "models" / "model.pt").exists(), reason="no shipped weights")
def test_the_shipped_guard_keeps_the_default_demo_and_names_only_slices_that_improved(tmp_path):
    """The shipped weights and thresholds agree: the README's demo (a held-out subject the model
    brings closer to the clean scan, as its report must show) is kept, and every slice the guard
    names as below its per-slice thresholds is one whose structure the clean truth says improved
    (a false alarm of the 5% the volume verdict allows for), not a loss the verdict hides."""
    assert main([str(tmp_path / "demo")]) == 0
    demo = tmp_path / "demo"
    with open(demo / "enhanced" / "enhancement_cases.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    summary = row["structure"]
    assert summary.startswith("structure kept ("), row
    assert ", ..." not in summary, summary  # every slice the guard names is checked below
    report = json.loads((demo / "report.json").read_text())
    means = report["metrics"]["enhanced"]
    assert means["lassim_out_clean"] > means["lassim_in_clean"] and report["ssim_improved_fraction"] >= 0.8
    named = [int(i) for i in re.findall(r"\d+", summary.partition("may show:")[2])]
    volumes = {
        name: read_image(next((demo / folder).glob("*.nii.gz")))[0].astype(np.float64)
        for name, folder in (("input", "input"), ("output", "enhanced"), ("clean", "reference"))
    }
    for i in named:
        degraded, enhanced, clean = (torch.from_numpy(volumes[k][i])[None, None] for k in ("input", "output", "clean"))
        before, after = float(lassim(degraded, clean, level=2)), float(lassim(enhanced, clean, level=2))
        assert after >= before, f"slice {i}: LaSSIM to clean {before:.3f} -> {after:.3f}, a loss the guard kept"


@pytest.mark.parametrize("device", ["bogus", "cpu') if print('INJECTED-CODE-RAN') is None else torch.device('cpu"])
def test_demo_refuses_a_bad_device_before_any_work(tmp_path, capsys, device):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as stop:
        main([str(out), "--device", device])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert f"argument --device: unknown device {device!r}" in captured.err
    assert "INJECTED-CODE-RAN" not in captured.out  # the message quotes it on stderr; a print would be here
    assert not list(tmp_path.iterdir())


def test_demo_refuses_unusable_folders_before_any_work(tmp_path, capsys):
    existing = tmp_path / "file"
    existing.write_text("keep")
    assert cli_main(["demo", str(existing)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {existing}: exists and is not a folder; give demo the name of a new folder.\n"
    )
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert cli_main(["demo", str(used)]) == 2
    assert capsys.readouterr().err == f"error: {used}: already holds notes.txt; give demo a new or empty folder.\n"
    assert cli_main(["demo", str(tmp_path / "new"), "--bundle", str(tmp_path / "no_bundle")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'no_bundle'}: not a MONAI bundle") and err.count("\n") == 1
    assert existing.read_text() == "keep" and [p.name for p in used.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "used"]
