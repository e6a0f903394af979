#!/usr/bin/env bash
# Optional check of MONAI Label with this package: BundleInferTask on the bundle, and a real server
# (the package's MONAI Label app on 127.0.0.1) answering GET /info/ and POST /infer/ round trips.
#
# MONAI Label pins packages that clash with the main environment (pydicom < 3 through
# pydicom-seg, numpy < 2), so it lives in its own virtual environment, created on first use:
#   bash scripts/monailabel_check.sh            # create/update .venv-monailabel, run tests/monailabel
#   MONAILABEL_VENV=/path/to/venv bash scripts/monailabel_check.sh
# TORCH selects the torch requirement (default: the CPU wheel pinned for this project).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${MONAILABEL_VENV:-.venv-monailabel}
TORCH=${TORCH:-torch==2.13.0}
STAMP="$VENV/.monailabel-installed"

if [ ! -f "$STAMP" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first, so that nothing below swaps it for another build
    "$VENV/bin/python" -m pip install --quiet "$TORCH"
    "$VENV/bin/python" -m pip install --quiet "$TORCH" "monailabel==0.8.5" "pydicom<3" "pynetdicom<3" \
        "dicomweb-client<0.60" "numpy<2" pytest
    # the package itself, with the dependencies the main environment uses (pydicom 2 is supported)
    "$VENV/bin/python" -m pip install --quiet "$TORCH" "pydicom<3" "numpy<2" -e .
    # MONAI Label imports torchvision.utils (pure Python). PyPI's torchvision wheels for Linux are CUDA
    # builds whose operator registration fails beside a CPU torch; 0.15 only warns that its compiled
    # extension did not load. Skip this on machines with a CUDA torch and a matching torchvision.
    if [ "${KEEP_TORCHVISION:-0}" != 1 ]; then
        "$VENV/bin/python" -m pip install --quiet --no-deps "torchvision==0.15.2"
    fi
    touch "$STAMP"
fi

# Orthanc, the DICOMweb server of tests/monailabel/test_dicomweb.py, from Debian packages
if ! command -v Orthanc >/dev/null || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y --no-install-recommends orthanc orthanc-dicomweb
fi

"$VENV/bin/python" -m pytest -q -p no:cacheprovider --confcutdir tests/monailabel tests/monailabel "$@"
