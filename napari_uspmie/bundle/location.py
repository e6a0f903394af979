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
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "monai_bundle", package.parent / "monai_bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no MONAI bundle found next to {package}; reinstall napari-uspmie or pass bundle_dir explicitly."
    )
