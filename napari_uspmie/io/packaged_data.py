"""Real images that ship inside installed Python packages, found without any download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["MNI152_T1", "package_file", "mni152_path"]

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
