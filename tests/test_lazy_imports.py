"""Importing the package, or opening a file through the napari reader, pulls in neither torch nor MONAI."""

from __future__ import annotations

import subprocess
import sys

from tests.io_factories import ANATOMICAL

HEAVY = ("torch", "monai", "napari", "qtpy", "PyQt6")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def test_import_is_light():
    assert _imported_after("import napari_uspmie") == []


def test_reading_a_nifti_through_the_napari_reader_is_light():
    code = (
        "from napari_uspmie.plugin.reader import napari_get_reader\n"
        f"layers = napari_get_reader({str(ANATOMICAL)!r})({str(ANATOMICAL)!r})\n"
        "assert layers[0][0].shape == (25, 41, 33)"
    )
    assert _imported_after(code) == []


def test_public_names_load_on_first_use():
    code = "import napari_uspmie as nu\nnu.lassim"
    assert "torch" in _imported_after(code)
