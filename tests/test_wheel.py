"""The installable product: a wheel and sdist built from this repository, installed in a fresh
virtual environment, run from outside the repository.

The fresh environment gets the wheel itself (``pip install --no-deps``) and sees the test
environment's dependencies through a ``.pth`` file that lists a folder of links to them, minus this
project's own editable install, so nothing is downloaded and only the wheel provides
``napari_uspmie``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.unpaired_data import REPO


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _dependency_links(target: Path) -> Path:
    """Links to every entry of this environment's site-packages except this project's own."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if "napari_uspmie" in entry.name.replace("-", "_"):  # the editable install, its finder and metadata
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", dist, REPO], tmp)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", venv], tmp)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    (Path(purelib) / "test_dependencies.pth").write_text(str(_dependency_links(tmp / "deps")) + "\n")
    wheel = next(dist.glob("napari_uspmie-*.whl"))
    installed = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], tmp)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return {"tmp": tmp, "dist": dist, "python": python, "venv": venv}


def test_wheel_and_sdist_carry_the_bundle_weights_and_manifest(fresh):
    wheel = zipfile.ZipFile(next(fresh["dist"].glob("*.whl")))
    names = set(wheel.namelist())
    for needed in ("models/model.pt", "models/model_config.json", "configs/inference.json", "configs/train.json",
                   "configs/metadata.json", "docs/README.md", "docs/data_license.txt"):  # fmt: skip
        assert f"napari_uspmie/monai_bundle/{needed}" in names, needed
    assert "napari_uspmie/plugin/napari.yaml" in names
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-uspmie = napari_uspmie.plugin:napari.yaml" in entry_points
    with tarfile.open(next(fresh["dist"].glob("*.tar.gz"))) as sdist:
        members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in sdist.getnames() if "/" in m}
    assert {"monai_bundle/models/model.pt", "pyproject.toml", "README.md"} <= members


def test_installed_package_runs_the_demo_outside_the_repository(fresh, tmp_path):
    located = _run([fresh["python"], "-c", "import napari_uspmie; print(napari_uspmie.__file__)"], tmp_path)
    assert located.stdout.strip().startswith(str(fresh["venv"])), located.stdout + located.stderr
    demo = _run([fresh["python"], "-m", "napari_uspmie", "demo", tmp_path / "demo", "--subject", "anatomical"],
                tmp_path, timeout=600)  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert (tmp_path / "demo" / "demo_figure.png").is_file()
    script = fresh["venv"] / "bin" / "napari-uspmie"
    assert "enhance" in _run([script, "--help"], tmp_path).stdout


def test_installed_bundle_runs_with_monai_and_napari_discovers_the_plugin(fresh, tmp_path):
    bundle = Path(
        _run([fresh["python"], "-c", "from napari_uspmie.io.packaged_data import bundle_path; print(bundle_path())"],
             tmp_path).stdout.strip()
    )  # fmt: skip
    assert bundle.is_relative_to(fresh["venv"]) and (bundle / "models" / "model.pt").is_file()
    scans = tmp_path / "scans"
    scans.mkdir()
    volume = (np.random.default_rng(0).random((48, 48, 3)) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), str(scans / "t1.nii.gz"))
    config = bundle / "configs" / "inference.json"
    run = _run([fresh["python"], "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", bundle,
                "--dataset_dir", scans, "--output_dir", tmp_path / "out"], tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = next((tmp_path / "out").rglob("*.nii.gz"))
    assert nib.load(str(out)).shape == volume.shape
    validated = _run([fresh["python"], "-m", "npe2", "validate", "napari-uspmie"], tmp_path)
    assert validated.returncode == 0 and "valid" in validated.stdout, validated.stdout + validated.stderr
