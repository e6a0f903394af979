"""Start a real MONAI Label server (the package's app) and an Orthanc DICOMweb server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import napari_uspmie.serving

APP = Path(napari_uspmie.serving.__file__).parent / "monailabel_app"
MODEL = "lamegan_enhancement"
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited:\n{log.read_text()[-4000:]}")
        try:
            status = requests.get(url, timeout=5).status_code
            if status == 200:
                return
            proc.terminate()
            pytest.fail(f"GET {url} answered {status}:\n{log.read_text()[-4000:]}")
        except requests.ConnectionError:
            time.sleep(1)
    proc.terminate()
    pytest.fail(f"no answer from {url} in {seconds:.0f} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def monailabel_server(tmp: Path, studies: str, bundle: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``monailabel start_server`` on the package's app, offline, on a free loopback port; yields its URL."""
    port = free_port()
    monailabel = Path(sys.executable).parent / "monailabel"
    cmd = [str(monailabel), "start_server", "--app", str(APP), "--studies", studies, "--host", "127.0.0.1",
           "--port", str(port), "--conf", "preload", "false", "--conf", "bundle", str(bundle)]  # fmt: skip
    # MONAI Label's launcher script runs the first ``python`` on PATH: this environment's
    path = f"{monailabel.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path, **(env or {})}
    log = tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        try:
            _wait_for(f"http://127.0.0.1:{port}/info/", proc, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def orthanc_server(tmp: Path) -> Iterator[str]:
    """Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) on a free port, local access only; yields the
    DICOMweb root URL."""
    if shutil.which("Orthanc") is None or not ORTHANC_DICOMWEB_PLUGIN.is_file():
        pytest.fail("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb (monailabel_check.sh does)")
    port = free_port()
    config = {
        "Name": "napari-uspmie-test", "StorageDirectory": str(tmp / "db"), "IndexDirectory": str(tmp / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "DicomPort": free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = tmp / "orthanc.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(f"http://127.0.0.1:{port}/system", proc, log, seconds=60)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def infer(url: str, image: str, params: dict | None = None) -> requests.Response:
    """``POST /infer/<model>?image=...&output=image`` on the CPU."""
    data = {"params": json.dumps({"device": "cpu", **(params or {})})}
    return requests.post(f"{url}/infer/{MODEL}", params={"image": image, "output": "image"}, data=data, timeout=300)
