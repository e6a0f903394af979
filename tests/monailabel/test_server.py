"""A real MONAI Label server on 127.0.0.1 serving the enhancer through the package's app, over REST.

The server is started the way docs/monailabel.md says (``monailabel start_server`` on the app that
ships in ``napari_uspmie/serving/monailabel_app``, offline), on a copy of the bundle with random
weights of the shipped architecture.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

import napari_uspmie.serving
from tests.io_factories import ct_volume, random_bundle, write_dicom_series, write_oblique_nifti

APP = Path(napari_uspmie.serving.__file__).parent / "monailabel_app"
MODEL = "lamegan_enhancement"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monailabel_server")
    bundle = random_bundle(tmp / "bundle")
    studies = tmp / "studies"
    studies.mkdir()
    source = write_oblique_nifti(studies / "brain.nii.gz")
    port = _free_port()
    monailabel = Path(sys.executable).parent / "monailabel"
    cmd = [str(monailabel), "start_server", "--app", str(APP), "--studies", str(studies), "--host", "127.0.0.1",
           "--port", str(port), "--conf", "preload", "false", "--conf", "bundle", str(bundle)]  # fmt: skip
    log = open(tmp / "server.log", "w")
    # MONAI Label's launcher script runs the first ``python`` on PATH: this environment's
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{monailabel.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("MONAI Label server exited:\n" + (tmp / "server.log").read_text()[-4000:])
        try:
            status = requests.get(f"{url}/info/", timeout=5).status_code
            if status == 200:
                break
            proc.terminate()
            pytest.fail(f"GET /info/ answered {status}:\n" + (tmp / "server.log").read_text()[-4000:])
        except requests.ConnectionError:
            time.sleep(1)
    else:
        proc.terminate()
        pytest.fail("MONAI Label server did not answer in 180 s:\n" + (tmp / "server.log").read_text()[-4000:])
    yield {"url": url, "tmp": tmp, "studies": studies, "source": source}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _infer(server, image: str, params: dict | None = None) -> requests.Response:
    data = {"params": json.dumps({"device": "cpu", **(params or {})})}
    return requests.post(f"{server['url']}/infer/{MODEL}", params={"image": image, "output": "image"}, data=data,
                         timeout=300)  # fmt: skip


def test_info_describes_an_image_to_image_model_without_trainers(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    model = info["models"][MODEL]
    assert model["type"] == "others" and not model["labels"] and model["dimension"] == 3
    assert "not a label map" in model["output"]
    assert info.get("trainers", {}) == {}


def test_nifti_from_the_datastore_comes_back_as_an_image_with_its_geometry(server):
    response = _infer(server, "brain", {"save_label": True})
    assert response.status_code == 200, response.text[:2000]
    result = server["tmp"] / "brain_enhanced.nii.gz"
    result.write_bytes(response.content)
    out, src = nib.load(result), server["source"]
    assert out.shape == src.shape and out.get_data_dtype() == src.get_data_dtype()
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    data, ref = np.asanyarray(out.dataobj), np.asanyarray(src.dataobj)
    assert ref.min() <= data.min() and data.max() <= ref.max() and not np.array_equal(data, ref)
    assert len(np.unique(data)) > 50  # grey levels, not a handful of label values
    # save_label was asked for, and refused: the datastore holds no label for the image
    datastore = requests.get(f"{server['url']}/datastore/", params={"output": "all"}, timeout=30).json()
    assert not datastore["objects"]["brain"]["labels"]


def test_dicom_series_folder_comes_back_with_its_geometry(server):
    series = server["tmp"] / "ct_series"
    volume = ct_volume(6) + 1000  # MR-like non-negative values
    write_dicom_series(series, volume, modality="MR", intercept=0.0)
    response = _infer(server, str(series))
    assert response.status_code == 200, response.text[:2000]
    result = server["tmp"] / "ct_enhanced.nii.gz"
    result.write_bytes(response.content)
    out = nib.load(result)
    assert out.shape == volume.shape[::-1]  # MONAI's (x, y, z)
    spacing = np.linalg.norm(out.affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, (0.7, 0.8, 2.5), atol=1e-3)  # write_dicom_series' default spacing
    data = np.asanyarray(out.dataobj)
    assert volume.min() <= data.min() and data.max() <= volume.max()


def test_a_dicom_seg_result_is_refused(server):
    response = _infer(server, "brain", {"label_info": [{"name": "enhanced"}]})
    assert response.status_code >= 400  # MONAI Label answers task errors with a bare 500; the log says why
    deadline = time.monotonic() + 20
    while "returns an enhanced image, not a segmentation" not in (server["tmp"] / "server.log").read_text():
        assert time.monotonic() < deadline, "the refusal's reason is not in the server log"
        time.sleep(0.5)


def test_the_shipped_app_needs_no_download(server):
    log = (server["tmp"] / "server.log").read_text()
    assert "Downloading" not in log and "sam2" not in log.lower()
    assert shutil.which("monailabel", path=str(Path(sys.executable).parent))
