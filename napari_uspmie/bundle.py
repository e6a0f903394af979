"""Location of the MONAI bundle that ships with the package."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundle_path"]


def bundle_path() -> Path:
    """Folder of the shipped MONAI bundle (``configs/``, ``models/``, ``docs/``).

    Installed wheels carry it inside the package; a source checkout keeps it at the
    repository's top level.

    Raises:
        FileNotFoundError: neither location holds a bundle.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "monai_bundle", here.parent / "monai_bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no MONAI bundle found next to {here}; reinstall napari-uspmie or pass bundle_dir explicitly."
    )
