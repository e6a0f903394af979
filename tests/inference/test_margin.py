"""The inference margin: reflected image around each slice in the network, cropped off after, so that
the marks a generator draws at the edges of what it is given fall outside the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_uspmie.errors import SettingError
from napari_uspmie.inference.enhancer import Enhancer, load_enhancer
from napari_uspmie.inference.inferer import DEFAULT_MARGIN, EnhancementInferer, add_margin


def edge_marking_network() -> nn.Module:
    """A 5x5 mean filter with zero padding: it darkens the two outer rows and columns of what it sees."""
    net = nn.Conv2d(1, 1, 5, padding=2, bias=False)
    nn.init.constant_(net.weight, 1 / 25)
    return net.eval()


@pytest.mark.parametrize("shape", [(40, 52), (37, 61)])
def test_a_margin_keeps_the_edge_marks_out_of_the_image(shape):
    flat = torch.full((1, 1, *shape), 0.5)
    without = EnhancementInferer(tile_size=64)(flat, edge_marking_network())
    assert without[0, 0, 0, 0] < 0.5 * 0.6  # the corner sees 9 of 25 taps
    with_margin = EnhancementInferer(tile_size=64, margin=4)(flat, edge_marking_network())
    assert with_margin.shape == flat.shape
    torch.testing.assert_close(with_margin, flat, rtol=0, atol=1e-6)


def test_add_margin_reflects_and_falls_back_on_tiny_images():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    padded = add_margin(x, 2)
    assert padded.shape == (1, 1, 7, 8)
    torch.testing.assert_close(padded[..., 2:5, 2:6], x)
    assert padded[0, 0, 2, 0] == x[0, 0, 0, 2]  # reflected about the edge pixel
    tiny = add_margin(torch.ones(1, 1, 2, 2), 4)  # reflection needs more pixels: replicated
    assert tiny.shape == (1, 1, 10, 10) and bool((tiny == 1).all())
    assert add_margin(x, 0) is x
    with pytest.raises(SettingError, match="margin"):
        EnhancementInferer(margin=-1)


def test_the_enhancer_and_the_shipped_bundle_use_the_margin():
    image = (np.random.default_rng(0).random((30, 44)) * 255).astype(np.uint8)
    marked = Enhancer(edge_marking_network(), device="cpu", cache_compiled=False, margin=0)
    kept = Enhancer(edge_marking_network(), device="cpu", cache_compiled=False, margin=4)
    reflected = nn.functional.pad(torch.from_numpy(image / 127.5 - 1)[None, None].float(), (4,) * 4, mode="reflect")
    direct = edge_marking_network()(reflected)[..., 4:-4, 4:-4]
    expected = np.clip(np.rint((direct[0, 0].detach().numpy() + 1) * 127.5), 0, 255)
    np.testing.assert_allclose(kept.enhance(image), expected, atol=1)
    assert np.abs(marked.enhance(image).astype(int) - expected).max() > 20  # the edges differ without it
    assert load_enhancer(device="cpu").margin == DEFAULT_MARGIN == 16  # the bundle's configs/inference.json too
    assert Enhancer(edge_marking_network(), device="cpu").margin == DEFAULT_MARGIN
