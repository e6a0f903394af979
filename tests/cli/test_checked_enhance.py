"""The command line's checked path: scope refusals, geometry round trips, structure-loss policies, reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.io.readers import read_image
from tests.cli.test_enhance import run_cli
from tests.io_factories import file_hashes, mni_slices, write_dicom_series, write_rgb_png


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    volume = np.moveaxis(mni_slices(4, 2), 0, -1).astype(np.int16)  # (X, Y, Z): 2 mm pixels, oblique
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[2 * c, -2 * s, 0, -90], [2 * s, 2 * c, 0, -60], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(volume, affine), str(folder / "oblique_2mm.nii.gz"))
    write_dicom_series(folder / "mr_series", mni_slices(3, 2).astype(np.int16), modality="MR", intercept=0.0)
    write_dicom_series(folder / "ct_series", mni_slices(3, 2).astype(np.int16) * 4 - 1000, modality="CT")
    write_rgb_png(folder / "photo.png", size=(96, 80))
    return folder


def test_out_of_scope_inputs_are_refused_in_one_line_and_the_rest_is_written(scans, tmp_path):
    before = file_hashes(scans)
    out = tmp_path / "out"
    done = run_cli(
        str(scans / "ct_series"), str(scans / "photo.png"), str(scans / "mr_series"), "-o", str(out), cwd=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "ct_series: outside this model's scope: modality CT" in errors[0] and "--allow-out-of-scope" in errors[0]
    assert "photo.png: outside this model's scope: a colour (RGB) image into a grey model" in errors[1]
    assert sorted(p.name for p in out.iterdir()) == ["mr_series_enhanced"]
    assert file_hashes(scans) == before
    declared = run_cli(str(scans / "oblique_2mm.nii.gz"), "--modality", "US", "-o", str(tmp_path / "o2"), cwd=tmp_path)
    assert declared.returncode == 1 and "modality US" in declared.stderr
    # a declared modality that is no DICOM code is a bad option (exit 2, before any work), not a scope refusal
    typo = run_cli(str(scans / "oblique_2mm.nii.gz"), "--modality", "banana", "-o", str(tmp_path / "o3"), cwd=tmp_path)
    assert typo.returncode == 2 and "--modality: must be a DICOM Modality code" in typo.stderr
    assert "'banana'" in typo.stderr and not (tmp_path / "o3").exists()
    lower = run_cli(str(scans / "oblique_2mm.nii.gz"), "--modality", "us", "-o", str(tmp_path / "o4"), cwd=tmp_path)
    assert lower.returncode == 1 and "modality US" in lower.stderr


def test_geometry_round_trips_on_oblique_nifti_and_dicom(scans, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = run_cli(
        str(scans / "oblique_2mm.nii.gz"),
        str(scans / "mr_series"),
        "-o",
        str(out),
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("enhanced at the model's pixel size") == 2
    src, enh = nib.load(scans / "oblique_2mm.nii.gz"), nib.load(out / "oblique_2mm_enhanced.nii.gz")
    np.testing.assert_allclose(enh.affine, src.affine, atol=1e-6)
    assert enh.shape == src.shape and enh.get_data_dtype() == src.get_data_dtype()
    series, meta = read_image(scans / "mr_series")
    derived, derived_meta = read_image(out / "mr_series_enhanced")
    assert derived.shape == series.shape and derived.dtype == series.dtype
    np.testing.assert_allclose(derived_meta["affine"], meta["affine"], atol=1e-4)
    records = {Path(r["input"]).name: r for r in json.loads(report.read_text())["inputs"]}
    assert records["oblique_2mm.nii.gz"]["resample_factors"] == pytest.approx([2.0, 2.0])
    assert records["mr_series"]["resample_factors"] == pytest.approx([0.8, 0.7])  # the series' pixel spacing
    assert all(r["output"] and len(r["lassim"]["3"]) == 4 - (r is records["mr_series"]) for r in records.values())
    assert all(isinstance(r["flagged"], bool) and isinstance(r["worst_slice"], int) for r in records.values())


@pytest.fixture(scope="module")
def strict_bundle(tmp_path_factory) -> Path:
    """The shipped bundle with a guard no real enhancement passes (LaSSIM 0.99999 at level 1)."""
    bundle = tmp_path_factory.mktemp("strict") / "bundle"
    shutil.copytree(bundle_path(), bundle)
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["structure_thresholds"] = {"min_lassim": {"1": 0.99999}}
    metadata_path.write_text(json.dumps(metadata))
    return bundle


def test_structure_loss_policies(scans, strict_bundle, tmp_path):
    source = scans / "oblique_2mm.nii.gz"
    common = [str(source), "--bundle", str(strict_bundle)]
    failed = run_cli(
        *common,
        "-o",
        str(tmp_path / "fail"),
        "--on-structure-loss",
        "fail",
        "--report",
        str(tmp_path / "f.json"),
        cwd=tmp_path,
    )
    assert failed.returncode == 3 and "structure LOST" in failed.stderr and "nothing written" in failed.stderr
    assert not (tmp_path / "fail").exists() or not any((tmp_path / "fail").iterdir())
    record = json.loads((tmp_path / "f.json").read_text())["inputs"][0]
    assert record["flagged"] is True and record["output"] is None and record["lassim"]["1"]

    kept = run_cli(*common, "-o", str(tmp_path / "keep"), "--on-structure-loss", "keep-input", cwd=tmp_path)
    assert kept.returncode == 0 and "[output is the input]" in kept.stdout
    written = nib.load(tmp_path / "keep" / "oblique_2mm_enhanced.nii.gz")
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(nib.load(source).dataobj))

    warned = run_cli(*common, "-o", str(tmp_path / "warn"), cwd=tmp_path)  # default: warn
    assert warned.returncode == 0 and "warning:" in warned.stderr and "structure LOST" in warned.stderr
    enhanced = np.asarray(nib.load(tmp_path / "warn" / "oblique_2mm_enhanced.nii.gz").dataobj)
    assert not np.array_equal(enhanced, np.asarray(nib.load(source).dataobj))


def test_a_volume_with_fewer_flagged_slices_than_good_volumes_show_is_kept_and_names_them(
    scans, strict_bundle, tmp_path
):
    """The strict guard flags every slice; a model whose good enhancements flag 60% of slices
    tolerates all 4 (a volume verdict), and the line and the report still name them."""
    bundle = tmp_path / "tolerant"
    shutil.copytree(strict_bundle, bundle)
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["structure_thresholds"]["slice_false_alarm"] = 0.6
    metadata_path.write_text(json.dumps(metadata))
    report = tmp_path / "r.json"
    source = scans / "oblique_2mm.nii.gz"
    done = run_cli(
        str(source), "--bundle", str(bundle), "-o", str(tmp_path / "o"), "--report", str(report), cwd=tmp_path
    )
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    assert "structure kept" in done.stdout and "4 slices below the per-slice thresholds" in done.stdout
    record = json.loads(report.read_text())["inputs"][0]
    assert record["flagged"] is False and record["flagged_slices"] == [0, 1, 2, 3]
    assert record["structure"]["allowed_flagged"] == 4
