"""The same pair gives the same LaSSIM in every tool: API, ``lassim`` command, ``enhance`` report, napari."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_uspmie.io.readers import read_image
from napari_uspmie.metric.lassim_rule import lassim_by_slice
from napari_uspmie.plugin.heatmap_widget import lassim_heatmap
from tests.cli.test_enhance import run_cli
from tests.io_factories import mni_slices


def _lassim_command(a, b, cwd, *extra) -> tuple[float, str]:
    done = subprocess.run(
        [sys.executable, "-m", "napari_uspmie", "lassim", str(a), str(b), *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(re.search(r"LaSSIM = ([0-9.]+)", done.stdout).group(1)), done.stdout


def test_one_pair_one_number(tmp_path):
    volume = np.moveaxis(mni_slices(5, 2), 0, -1).astype(np.uint8)  # NIfTI (X, Y, Z)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "scan.nii.gz"))
    report = tmp_path / "report.json"
    done = run_cli(str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out"), "--report", str(report), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    source, _ = read_image(tmp_path / "scan.nii.gz")
    enhanced, _ = read_image(tmp_path / "out" / "scan_enhanced.nii.gz")

    api = lassim_by_slice(enhanced, source, level=3)
    command, printed = _lassim_command(tmp_path / "out" / "scan_enhanced.nii.gz", tmp_path / "scan.nii.gz", tmp_path)
    _, napari_score, mode = lassim_heatmap(source, enhanced, level=3)
    guard = float(np.mean(json.loads(report.read_text())["inputs"][0]["lassim"]["3"]))

    assert command == pytest.approx(api.score, abs=1e-6)  # printed with 6 decimals
    assert napari_score == pytest.approx(api.score, abs=1e-12) and mode == "slice by slice along axis 0"
    assert guard == pytest.approx(api.score, abs=2e-3)  # the guard scores the output before its uint8 cast
    assert f"level 3 of 5, mean of {source.shape[0]} slices" in printed
    assert 0.3 < api.score < 1.0
