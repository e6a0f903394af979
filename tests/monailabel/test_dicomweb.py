"""MONAI Label over DICOMweb: an MR series in a real Orthanc on 127.0.0.1, served by the package's app.

MONAI Label lists DICOMweb series through a search filter that defaults to ``{"Modality": "CT"}``;
the MR filter is set the documented way (``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests

from tests.io_factories import ct_volume, random_bundle, write_dicom_series
from tests.monailabel.server import infer, monailabel_server, orthanc_server

MR_FILTER = {"MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "MR"})}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicomweb")
    volume = ct_volume(6) + 1000  # MR-like non-negative values
    files = write_dicom_series(tmp / "series", volume, modality="MR", intercept=0.0)
    with orthanc_server(tmp) as orthanc:
        for path in files:
            assert requests.post(f"{orthanc}/instances", data=path.read_bytes(), timeout=30).status_code == 200
        dicomweb = f"{orthanc}/dicom-web"
        with monailabel_server(tmp, dicomweb, random_bundle(tmp / "bundle"), env=MR_FILTER) as url:
            uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
            yield {"url": url, "orthanc": orthanc, "volume": volume, "tmp": tmp, "uid": uid}


def test_mr_series_over_dicomweb_comes_back_as_an_image_and_nothing_is_stored(servers):
    stats = requests.get(f"{servers['url']}/datastore/", timeout=60).json()
    assert stats["total"] == 1, stats  # the MR series is listed with the MR filter
    response = infer(servers["url"], servers["uid"], {"save_label": True})
    assert response.status_code == 200, response.text[:2000]
    result = servers["tmp"] / "enhanced.nii.gz"
    result.write_bytes(response.content)
    out = nib.load(result)
    volume = servers["volume"]
    assert out.shape == volume.shape[::-1]
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), (0.7, 0.8, 2.5), atol=1e-3)
    data = np.asanyarray(out.dataobj)
    assert volume.min() <= data.min() and data.max() <= volume.max() and len(np.unique(data)) > 50
    # save_label was asked for and refused: no DICOM SEG went back to the PACS
    all_series = requests.get(f"{servers['orthanc']}/series", timeout=30).json()
    assert len(all_series) == 1
    segs = requests.get(f"{servers['orthanc']}/dicom-web/series", params={"Modality": "SEG"}, timeout=30)
    assert segs.status_code in (200, 204) and not (segs.content and segs.json())
