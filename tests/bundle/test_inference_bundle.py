"""The inference bundle through the real ``python -m monai.bundle`` command line, on a temporary bundle copy
holding random weights of the shipped architecture: outputs keep geometry, bad inputs fail alone,
evaluate.json reports LaSSIM, ckpt_export gives a matching TorchScript model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from napari_uspmie.io.readers import read_image
from napari_uspmie.metric.lassim import lassim
from napari_uspmie.metric.lassim_rule import lassim_by_slice
from napari_uspmie.models.networks import ResnetGenerator
from tests.io_factories import (
    CT_SMALL,
    MR_TRUNCATED,
    ct_volume,
    file_hashes,
    random_bundle,
    write_dicom_series,
    write_oblique_nifti,
    write_rgb_png,
    write_tiff16,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def monai_bundle(*args, cwd) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ...`` in a fresh interpreter, from ``cwd`` (not the repository)."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_run")
    bundle = random_bundle(root / "bundle")
    good = root / "good"
    write_dicom_series(good / "ct_series", ct_volume(12))
    write_oblique_nifti(good / "brain.nii.gz")
    write_rgb_png(good / "retina.png")
    write_tiff16(good / "slice16.tif")
    shutil.copy(CT_SMALL, good / "ct_small.dcm")
    mixed = root / "mixed"
    shutil.copytree(good, mixed)
    (mixed / "notes.txt").write_text("not an image")
    shutil.copy(MR_TRUNCATED, mixed / "broken.dcm")
    nan = np.zeros((20, 20, 4), np.float32)
    nan[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), mixed / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), mixed / "fmri.nii.gz")
    write_dicom_series(mixed / "two_series", ct_volume(3), description="A")
    for f in write_dicom_series(root / "tmp_b", ct_volume(2)[:, :40, :40], description="B"):
        shutil.move(f, mixed / "two_series" / f"b_{f.name}")
    from PIL import Image

    Image.fromarray(np.arange(15, dtype=np.uint8).reshape(3, 5) * 10).save(mixed / "tiny.png")
    return {"root": root, "bundle": bundle, "good": good, "mixed": mixed}


@pytest.fixture(scope="module")
def mixed_run(workspace):
    before = file_hashes(workspace["mixed"])
    out = workspace["root"] / "out"
    config = workspace["bundle"] / "configs" / "inference.json"
    # CT series and colour pictures are outside the shipped MR model's scope: allowed here, where the
    # file handling is under test (test_out_of_scope_cases_are_refused checks the refusal)
    proc = monai_bundle("run", "--config_file", config, "--dataset_dir", workspace["mixed"], "--output_dir", out,
                        "--allow_out_of_scope", "true", cwd=workspace["root"])  # fmt: skip
    return proc, out, before


def _table(stdout: str) -> str:
    """The case table the run prints last (logging may share stdout)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("case "))
    return "\n".join(lines[start:])


def test_run_writes_outputs_and_reports_failures(workspace, mixed_run):
    proc, out, before = mixed_run
    assert proc.returncode == 1, proc.stderr[-3000:]  # some inputs are broken: non-zero, the others done
    table = _table(proc.stdout)
    for ok in ("brain.nii.gz", "ct_series", "ct_small.dcm", "retina.png", "slice16.tif", "tiny.png"):
        assert any(line.startswith(ok) and "| enhanced" in line for line in table.splitlines()), (ok, table)
    failures = {
        "broken.dcm": "broken.dcm: cannot decode DICOM pixel data",
        "nan.nii.gz": "NaN/Inf",
        "fmri.nii.gz": "4D NIfTI",
        "two_series": "holds 2 DICOM series",
    }
    for case, message in failures.items():
        line = next(line for line in table.splitlines() if line.startswith(case))
        assert "| failed" in line and message in line, line
    assert "notes.txt" not in table and "notes.txt: not an image file" in proc.stdout + proc.stderr
    assert "6 of 10 case(s) enhanced, 4 failed." in table
    assert file_hashes(workspace["mixed"]) == before  # inputs never modified
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary left
    with open(out / "enhancement_cases.csv") as f:
        assert len(list(csv.DictReader(f))) == 10


def test_out_of_scope_cases_are_refused_and_the_verdict_is_in_the_table(workspace, mixed_run):
    proc, out, _ = mixed_run
    table = _table(proc.stdout)
    assert "structure" in table.splitlines()[0]  # the guard's verdict column
    enhanced = [line for line in table.splitlines() if "| enhanced" in line]
    verdicts = ("structure kept", "structure LOST", "structure NOT CHECKED")  # tiny.png: 3 x 5 pixels
    assert enhanced and all(any(v in line for v in verdicts) for line in enhanced)
    strict = workspace["root"] / "strict"
    config = workspace["bundle"] / "configs" / "inference.json"
    refused = monai_bundle("run", "--config_file", config, "--dataset_dir", workspace["good"], "--output_dir", strict,
                           cwd=workspace["root"])  # fmt: skip
    assert refused.returncode == 1
    lines = _table(refused.stdout).splitlines()
    ct = next(line for line in lines if line.startswith("ct_series"))
    assert "| failed" in ct and "outside this model's scope: modality CT" in ct and "--allow_out_of_scope true" in ct
    nifti = next(line for line in lines if line.startswith("brain.nii.gz"))
    assert "| enhanced" in nifti
    with open(strict / "enhancement_cases.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert rows["brain.nii.gz"]["structure"].startswith("structure ") and rows["ct_series"]["status"] == "failed"


def test_nifti_output_geometry(workspace, mixed_run):
    _, out, _ = mixed_run
    src, dst = nib.load(workspace["mixed"] / "brain.nii.gz"), nib.load(out / "brain_enhanced.nii.gz")
    np.testing.assert_array_equal(dst.affine, src.affine)
    assert dst.shape == src.shape and dst.get_data_dtype() == src.get_data_dtype()
    for field in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "srow_x", "pixdim"):
        np.testing.assert_array_equal(dst.header[field], src.header[field])
    a, b = np.asanyarray(src.dataobj), np.asanyarray(dst.dataobj)
    assert a.min() <= b.min() and b.max() <= a.max() and not np.array_equal(a, b)


def test_dicom_series_output(workspace, mixed_run):
    _, out, _ = mixed_run
    series = out / "ct_series_enhanced"
    x, mx = read_image(workspace["mixed"] / "ct_series")
    y, my = read_image(series)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(my["affine"], mx["affine"], atol=1e-6)
    assert x.min() <= y.min() and y.max() <= x.max()  # HU range of the input
    src = {float(d.ImagePositionPatient[2]): d for d in mx["dicom_datasets"]}
    for d in my["dicom_datasets"]:
        s = src[float(d.ImagePositionPatient[2])]
        assert d.SeriesInstanceUID != s.SeriesInstanceUID and d.SOPInstanceUID != s.SOPInstanceUID
        assert d.StudyInstanceUID == s.StudyInstanceUID and d.PatientID == s.PatientID
        assert "DERIVED" in d.ImageType and "enhanced" in d.SeriesDescription
        for tag in ("ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept"):
            assert d.get(tag) == s.get(tag)
    stored = pydicom.dcmread(next(series.iterdir())).pixel_array
    assert stored.dtype == np.uint16 and stored.min() >= 0  # original unsigned representation


def test_2d_outputs(workspace, mixed_run):
    _, out, _ = mixed_run
    for name, enhanced in (("retina.png", "retina_enhanced.png"), ("slice16.tif", "slice16_enhanced.tif"),
                           ("ct_small.dcm", "ct_small_enhanced.dcm"), ("tiny.png", "tiny_enhanced.png")):  # fmt: skip
        x, mx = read_image(workspace["mixed"] / name)
        y, my = read_image(out / enhanced)
        assert (y.shape, y.dtype, my["format"]) == (x.shape, x.dtype, mx["format"]), name


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU builds C++ kernels with g++")
def test_compiled_run_matches_eager(workspace, mixed_run):
    """``--compile true``: the network through torch.compile (Winograd 3x3 convolutions on CPU) gives the
    eager run's 16-bit TIFF to within 2 grey levels of 65535 (the compiled network is within 1e-4)."""
    _, eager_out, _ = mixed_run
    source = workspace["root"] / "compile_in"
    source.mkdir()
    shutil.copy(workspace["good"] / "slice16.tif", source)
    out = workspace["root"] / "compile_out"
    config = workspace["bundle"] / "configs" / "inference.json"
    proc = monai_bundle("run", "--config_file", config, "--dataset_dir", source, "--output_dir", out,
                        "--compile", "true", cwd=workspace["root"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled, _ = read_image(out / "slice16_enhanced.tif")
    eager, _ = read_image(eager_out / "slice16_enhanced.tif")
    original, _ = read_image(source / "slice16.tif")
    assert np.abs(compiled.astype(np.int64) - eager.astype(np.int64)).max() <= 2
    assert np.abs(compiled.astype(np.int64) - original.astype(np.int64)).max() > 100  # enhanced, not copied


def test_evaluate_prints_lassim_table(workspace):
    out = workspace["root"] / "eval"
    configs = workspace["bundle"] / "configs"
    files = f"['{configs / 'inference.json'}','{configs / 'evaluate.json'}']"
    good = workspace["root"] / "good3"
    good.mkdir()
    for name in ("retina.png", "ct_series", "brain.nii.gz"):
        src = workspace["good"] / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, good / name)
    proc = monai_bundle("run", "--config_file", files, "--dataset_dir", good, "--output_dir", out,
                        "--allow_out_of_scope", "true", cwd=out.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| lassim" in _table(proc.stdout)
    assert "LaSSIM over 3 case(s)" in proc.stdout and "over all images and slices: lassim" in proc.stdout
    summary = json.loads((out / "lassim_summary.json").read_text())
    assert summary["n"] == 3 and -1 <= summary["key_metric"]["lassim"] <= 1  # LaSSIMHandler's mean
    with open(out / "lassim_cases.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"retina.png", "ct_series", "brain.nii.gz"}
    for row in rows.values():
        assert -1 <= float(row["lassim"]) <= 1 and os.path.getsize(row["heatmap"]) > 0
    assert rows["brain.nii.gz"]["level"] == "2"  # 41x33 slices: level 3 needs 49 pixels
    x, _ = read_image(good / "retina.png")
    y, _ = read_image(out / "retina_enhanced.png")
    assert float(rows["retina.png"]["lassim"]) == pytest.approx(lassim(y, x), abs=2e-3)  # uint8 rounding of the file
    # a volume: the one rule of every tool (slice by slice, level lowered to fit), as the lassim command gives it
    source, _ = read_image(good / "brain.nii.gz")
    enhanced, _ = read_image(out / "brain_enhanced.nii.gz")
    expected = lassim_by_slice(enhanced, source, level=3)
    assert expected.level == 2 and float(rows["brain.nii.gz"]["lassim"]) == pytest.approx(expected.score, abs=2e-3)


def test_unwritable_output_fails_before_work(workspace, capsys):
    """In-process ``monai.bundle.run`` (what the command line calls): exit status 2 before any case runs."""
    from monai.bundle import run

    blocker = workspace["root"] / "blocker"
    blocker.write_text("a file, not a folder")
    config = workspace["bundle"] / "configs" / "inference.json"
    with pytest.raises(SystemExit) as exit_info:
        run(config_file=str(config), dataset_dir=str(workspace["good"]), output_dir=str(blocker / "out"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not writable" in err and "enhanced in" not in err


def test_required_properties_and_monai_label_pipeline(workspace, shipped_architecture):
    """ConfigWorkflow's infer properties are all there, and the preprocessing -> inferer -> postprocessing
    chain (what MONAI Label's BundleInferTask runs, without the saver) keeps MONAI's layout and metadata."""
    from monai.bundle import ConfigParser, ConfigWorkflow
    from monai.transforms import Compose, SaveImaged

    bundle = workspace["bundle"]
    config = bundle / "configs" / "inference.json"
    workflow = ConfigWorkflow(
        config_file=str(config),
        workflow_type="infer",
        dataset_dir=str(workspace["good"]),
        output_dir=str(workspace["root"] / "props"),
    )
    workflow.initialize()
    assert workflow.check_properties() == []

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in ResnetGenerator(**shipped_architecture).parameters()
    )
    pre = parser.get_parsed_content("preprocessing")
    post = Compose([t for t in parser.get_parsed_content("postprocessing").transforms if not isinstance(t, SaveImaged)])
    # the saver is a SaveImaged: MONAI Label drops it; the structure guard stays
    assert [type(t).__name__ for t in post.transforms] == ["RestoreFromNetworkd", "StructureGuardd"]
    data = pre({"image": str(workspace["good"] / "brain.nii.gz")})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net.eval())[0]
    data = post(data)
    assert data["structure"]["lassim"]["1"] and data["structure_summary"].startswith("structure ")
    loaded = nib.load(workspace["good"] / "brain.nii.gz")
    assert tuple(data["pred"].shape) == (1, *loaded.shape)
    np.testing.assert_allclose(data["pred"].affine.numpy(), loaded.affine, atol=1e-6)


def test_network_def_matches_shipped_weights(shipped_architecture):
    """inference.json's network_def is the architecture of the repository's model_config.json / model.pt."""
    from monai.bundle import ConfigParser

    from napari_uspmie.io.packaged_data import bundle_path

    parser = ConfigParser()
    parser.read_config(str(bundle_path() / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_path())
    # the architecture is written once, in models/model_config.json, and the config builds from it
    assert parser.get_parsed_content("model_config") == str(bundle_path() / "models" / "model_config.json")
    built = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in built.parameters()) == sum(
        p.numel() for p in ResnetGenerator(**shipped_architecture).parameters()
    )
    models = bundle_path() / "models"
    if (models / "model_config.json").is_file():
        assert json.loads((models / "model_config.json").read_text()) == shipped_architecture
    if (models / "model.pt").is_file():  # trained weights, once shipped, load strictly
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True))


def test_ckpt_export_and_verify(workspace, shipped_architecture):
    bundle = workspace["bundle"]
    ts = workspace["root"] / "model.ts"
    proc = monai_bundle("ckpt_export", "network_def", "--filepath", ts, "--ckpt_file", bundle / "models" / "model.pt",
                        "--meta_file", bundle / "configs" / "metadata.json",
                        "--config_file", bundle / "configs" / "inference.json", cwd=workspace["root"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    from napari_uspmie.models.networks import ResnetGenerator

    net = ResnetGenerator(**shipped_architecture)
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(2, 1, 64, 80) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), net.eval()(x), atol=1e-5, rtol=1e-4)

    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        n=16,
        device="cpu",
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("--tile_size", "7"), "tile_size must be a multiple of 4 and at least 16, got 7."),
        (("--on_structure_loss", "maybe"), "on_structure_loss must be one of ('warn', 'keep-input', 'fail')"),
    ],
)
def test_bad_settings_are_one_line_without_traceback(workspace, setting, message):
    config = workspace["bundle"] / "configs" / "inference.json"
    out = workspace["root"] / f"bad_{setting[0].strip('-')}"
    proc = monai_bundle("run", "--config_file", config, "--dataset_dir", workspace["good"], "--output_dir", out,
                        *setting, cwd=workspace["root"])  # fmt: skip
    assert proc.returncode == 1 and message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_case_table_keeps_every_column_when_the_first_case_failed(tmp_path, capsys):
    """The CSV's columns are all the cases' columns (a failed first case has no metric columns), and the
    file is written whole through a temporary name."""
    from types import SimpleNamespace

    from napari_uspmie.bundle.workflow import EnhancementEvaluator

    cases = [
        {"case": "bad.nii.gz", "status": "failed", "seconds": 0.0, "output": "", "error": "bad.nii.gz: NaN/Inf"},
        {
            "case": "ok.png",
            "status": "enhanced",
            "seconds": 0.5,
            "output": "out/ok.png",
            "structure": "kept",
            "error": "",
        },
    ]
    target = tmp_path / "cases.csv"
    target.write_text("an older table\n")
    EnhancementEvaluator.summarize(SimpleNamespace(cases=cases), target, exit_on_failure=False)
    with open(target) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "status", "seconds", "output", "structure", "error"]
    assert rows[1]["structure"] == "kept" and rows[0]["structure"] == "" and rows[0]["error"].endswith("NaN/Inf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv"]  # no temporary left
    assert "1 of 2 case(s) enhanced, 1 failed." in capsys.readouterr().out
