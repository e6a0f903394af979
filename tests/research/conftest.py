"""A real unpaired MRI dataset (built from packaged volumes) shared by the research tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_uspmie.research.mri_dataset import build_mri_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mri_eval")
    build_mri_dataset(root, seed=0, orientations=("axial",), volumes=("nibabel_anatomical",))
    return root


@pytest.fixture
def heldout_only(dataset, tmp_path) -> Path:
    """A copy of ``dataset`` holding only its held-out volumes: keeps command-line runs short."""
    small = tmp_path / "small"
    (small / "heldout/slices/clean").mkdir(parents=True)
    (small / "heldout/volumes").mkdir(parents=True)
    for p in (dataset / "heldout/volumes").iterdir():
        (small / "heldout/volumes" / p.name).write_bytes(p.read_bytes())
    return small
