"""The luma of channels-last RGB batches (stacked ``(H, W, 3)`` arrays) against scikit-image's ``rgb2gray``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2gray

from napari_uspmie.metric.interleaved_luma import BLOCK, interleaved_luma, is_interleaved_rgb


@pytest.mark.parametrize("size", [(16, 16), (37, 41), (1, 5), (3, 17)])
def test_uint8_arrays_as_users_stack_them(size):
    """Pixel counts that are (256) and are not multiples of the block (the rest goes through a vector product)."""
    assert 16 * 16 % BLOCK == 0 and 37 * 41 % BLOCK != 0
    rng = np.random.default_rng(sum(size))
    images = [(rng.random((*size, 3)) * 255).astype(np.uint8) for _ in range(3)]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    assert is_interleaved_rgb(batch)
    luma = interleaved_luma(batch, torch.float64)
    assert luma.shape == (3, 1, *size) and luma.is_contiguous()
    expected = np.stack([rgb2gray(image) for image in images])[:, None]
    np.testing.assert_allclose(luma.numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(interleaved_luma(batch, torch.float32).numpy(), expected, rtol=0, atol=1e-6)


def test_float_input_is_not_rescaled_and_out_is_filled():
    x = torch.rand(2, 5, 7, 3, dtype=torch.float64)
    out = torch.empty(2, 1, 5, 7, dtype=torch.float64)
    result = interleaved_luma(x.permute(0, 3, 1, 2), torch.float64, out=out)
    assert result is out
    np.testing.assert_allclose(out.numpy()[:, 0], rgb2gray(x.numpy()), rtol=0, atol=1e-14)


def test_other_layouts_are_refused():
    planar = torch.rand(2, 3, 8, 8)
    assert not is_interleaved_rgb(planar) and not is_interleaved_rgb(torch.rand(2, 8, 8, 1).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="channels-last"):
        interleaved_luma(planar, torch.float32)
