"""Fixtures of the napari tests."""

from __future__ import annotations

import pytest

from tests.plugin.napari_helpers import save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint_epoch=1.pt")
