"""Files that ship with the installed packages, found without any download: the package's own MONAI
bundle and real images inside other packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["MNI152_T1", "bundle_path", "package_file", "mni152_path"]

#: nilearn's MNI152 2009a symmetric T1 template (197 x 233 x 189 voxels, 1 mm, uint8)
MNI152_T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


def package_file(package: str, relative: str) -> Path | None:
    """Path of a data file inside an installed package, or ``None`` when the package or file is absent.

    Args:
        package: the importable package name (not imported, only located).
        relative: the file's path inside the package folder.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def mni152_path() -> Path:
    """Path of the MNI152 T1 template.

    Raises:
        FileNotFoundError: nilearn is not installed or no longer ships the file.
    """
    path = package_file(*MNI152_T1)
    if path is None:
        raise FileNotFoundError(
            f"the MNI152 template ({MNI152_T1[1]}) needs nilearn: pip install nilearn (or a release that ships it)."
        )
    return path


def bundle_path() -> Path:
    """Folder of the shipped MONAI bundle (``configs/``, ``models/``, ``docs/``).

    Installed wheels carry it inside the package; a source checkout keeps it at the
    repository's top level.

    Raises:
        FileNotFoundError: neither location holds a bundle.
    """
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "monai_bundle", package.parent / "monai_bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no MONAI bundle found next to {package}; reinstall napari-uspmie or pass bundle_dir explicitly."
    )
