"""Judging a generator on the clean training images (domain B): the identity leaves them alone, a
darkening and a grid are counted."""

from __future__ import annotations

import numpy as np
import pytest

from napari_uspmie.research.training_identity import identity_figures, main
from tests.unpaired_data import save_tiny_generator


def _grid(x: np.ndarray) -> np.ndarray:
    """Add a 4-pixel checkerboard of 0.08 inside the image."""
    rows, cols = np.indices(x.shape)
    return np.clip(x + 0.08 * (((rows // 2) + (cols // 2)) % 2 - 0.5), 0, 1)


def test_figures_tell_the_identity_from_harmful_changes(dataset):
    identity = identity_figures(dataset, lambda x: x, every=8)
    assert identity["images"] >= 5 and identity["dark_ok"] == 1.0 and identity["dark_move"] == 0.0
    assert identity["lassim_in_out_1"] == pytest.approx(1.0) and identity["grid"] == 0.0
    darker = identity_figures(dataset, lambda x: x**2, every=8)  # mid-greys pushed below the dark cut
    assert darker["dark_ok"] < 0.5 and darker["dark_move"] > 0.15
    assert identity_figures(dataset, _grid, every=8)["grid"] > 0.5


def test_command_prints_one_row_per_model(dataset, tmp_path, capsys):
    model = save_tiny_generator(tmp_path / "tiny")
    assert main([str(dataset), "--model", f"tiny={model}", "--every", "20"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 1 and rows[0].count("|") == 7
    with pytest.raises(SystemExit) as missing:
        main([str(tmp_path), "--model", f"tiny={model}"])
    assert missing.value.code == 2 and "no B/ folder" in capsys.readouterr().err
