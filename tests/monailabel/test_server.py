"""A real MONAI Label server on 127.0.0.1 serving the enhancer through the package's app, over REST.

The server is started the way docs/monailabel.md says (``monailabel start_server`` on the app that
ships in ``napari_uspmie/serving/monailabel_app``, offline), on a copy of the bundle with random
weights of the shipped architecture.
"""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
import requests

from tests.io_factories import ct_volume, random_bundle, write_dicom_series, write_oblique_nifti
from tests.monailabel.server import MODEL, infer, monailabel_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monailabel_server")
    bundle = random_bundle(tmp / "bundle")
    studies = tmp / "studies"
    studies.mkdir()
    source = write_oblique_nifti(studies / "brain.nii.gz")
    with monailabel_server(tmp, str(studies), bundle) as url:
        yield {"url": url, "tmp": tmp, "studies": studies, "source": source}


def _infer(server, image: str, params: dict | None = None) -> requests.Response:
    return infer(server["url"], image, params)


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
