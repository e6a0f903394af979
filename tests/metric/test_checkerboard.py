"""The checkerboard index: 1 for a pure period-4 pattern, near 0 for anatomy, additive patterns detected."""

from __future__ import annotations

import numpy as np
import pytest

from napari_uspmie.metric.checkerboard import checkerboard_index
from tests.io_factories import mni_slices


def _pattern(shape, period):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((x // (period // 2) + y // (period // 2)) % 2).astype(np.float64)


@pytest.mark.parametrize("period", [2, 4])
def test_pure_patterns_of_the_period_or_a_divisor_score_one(period):
    assert checkerboard_index(_pattern((64, 48), period), period=4) == pytest.approx(1.0)


def test_anatomy_scores_near_zero_and_a_faint_grid_raises_it():
    brain = mni_slices()[0].astype(np.float64)
    clean = checkerboard_index(brain)
    assert clean < 0.01
    gridded = brain + 0.05 * brain.std() * _pattern(brain.shape, 4)
    assert checkerboard_index(gridded) > 1.5 * clean


def test_stacks_give_one_index_per_image_and_constants_zero():
    stack = np.stack([_pattern((16, 16), 4), np.full((16, 16), 7.0)])
    assert checkerboard_index(stack).tolist() == [pytest.approx(1.0), 0.0]
    with pytest.raises(ValueError, match="at least 8 x 8"):
        checkerboard_index(np.zeros((7, 40)))
