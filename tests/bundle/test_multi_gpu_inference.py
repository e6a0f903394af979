"""Inference split across processes: torchrun, two CPU processes, gloo, a DistributedSampler over the cases."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import nibabel as nib
import numpy as np

from tests.io_factories import file_hashes, random_bundle, write_oblique_nifti


def test_cases_are_split_across_two_processes_with_one_merged_table(tmp_path):
    bundle = random_bundle(tmp_path / "bundle")
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        write_oblique_nifti(scans / f"brain{k}.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 5, 3), np.int16), np.eye(4)), scans / "fmri.nii.gz")  # fails
    before = file_hashes(scans)
    configs = f"['{bundle / 'configs' / 'inference.json'}','{bundle / 'configs' / 'multi_gpu_inference.json'}']"
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(bundle),
        "--dataset_dir", str(scans), "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]  # the fMRI series failed on one rank: the run says so
    # torchrun reports a child's nonzero exit with its own traceback; the processes print none
    assert log.count("Traceback") == 1 and "ChildFailedError" in log, log[-3000:]
    assert "fmri.nii.gz: 4D NIfTI of shape (16, 16, 5, 3)" in log
    # Every case exactly once, over both ranks: 4 cases -> 2 per process.
    assert log.count("EnhancementEvaluator - INFO - Engine run finished") == 2, log[-3000:]
    with open(out / "enhancement_cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["brain0.nii.gz", "brain1.nii.gz", "brain2.nii.gz", "fmri.nii.gz"]
    assert [r["status"] for r in rows] == ["enhanced"] * 3 + ["failed"]
    assert log.count("3 of 4 case(s) enhanced, 1 failed.") == 1  # one table, from rank 0
    for row in rows[:3]:
        assert nib.load(row["output"]).shape == nib.load(scans / row["case"]).shape
    assert file_hashes(scans) == before
