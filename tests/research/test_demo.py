"""The one-command demo: degrade a held-out volume, enhance it through the bundle, report."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_uspmie.io.packaged_data import bundle_path
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
    assert main([str(out), "--subject", "anatomical"]) == 0
    enhanced = nib.load(str(out / "enhanced" / "anatomical_degraded_enhanced.nii.gz"))
    degraded = nib.load(str(out / "input" / "anatomical_degraded.nii.gz"))
    assert enhanced.shape == degraded.shape
    np.testing.assert_allclose(enhanced.affine, degraded.affine)
    assert not np.array_equal(np.asanyarray(enhanced.dataobj), np.asanyarray(degraded.dataobj))
    with Image.open(out / "demo_figure.png") as im:
        assert im.size[0] > 600
    report = json.loads((out / "report.json").read_text())
    assert report["slices"] > 10 and set(report["metrics"]) == {"degraded input", "enhanced"}
    assert "| enhanced |" in (out / "report.md").read_text()
    assert "SSIM to clean" in capsys.readouterr().out
