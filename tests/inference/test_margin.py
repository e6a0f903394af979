"""The inference margin: context around each slice in the network, cropped off after, so that the
marks a generator draws at the edges of what it is given fall outside the image. A slice with
background at its border is reflected; one whose field of view cuts through the anatomy is
framed by its own minimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.errors import SettingError
from napari_uspmie.inference.enhancer import Enhancer, load_enhancer
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.inference.margin import DEFAULT_MARGIN, add_margin, border_tissue_share


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


def head(size: int) -> torch.Tensor:
    """A ``(1, 1, size, size)`` head in [-1, 1]: tissue (0.4) in air (-1), a dark ventricle (-0.6), noise."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    image = np.where(r < 0.4 * size, 0.4, -1.0) + np.where(r < 0.1 * size, -1.0, 0.0)
    image += np.random.default_rng(size).normal(0, 0.02, image.shape)
    return torch.from_numpy(image).float()[None, None]


def test_a_slice_with_background_at_its_border_is_reflected_and_tiny_ones_replicated():
    x = head(48)
    assert border_tissue_share(x).item() == 0
    torch.testing.assert_close(add_margin(x, 4), F.pad(x, (4, 4, 4, 4), mode="reflect"))
    tiny = add_margin(torch.ones(1, 1, 2, 2), 4)  # reflection needs more pixels: replicated
    assert tiny.shape == (1, 1, 10, 10) and bool((tiny == 1).all())
    assert border_tissue_share(torch.ones(1, 1, 8, 8)).item() == 0  # flat: nothing to tell apart
    assert add_margin(x, 0) is x
    with pytest.raises(SettingError, match="margin"):
        EnhancementInferer(margin=-1)


def test_a_field_of_view_through_the_anatomy_is_framed_by_its_minimum():
    inside = head(96)[..., 28:68, 30:70]  # tissue all round the border, the ventricle in the middle
    assert border_tissue_share(inside).item() == 1
    framed = add_margin(inside, 6)
    assert framed.shape == (1, 1, 52, 52)
    torch.testing.assert_close(framed[..., 6:-6, 6:-6], inside)
    frame = framed.clone()
    frame[..., 6:-6, 6:-6] = float("nan")
    assert bool((frame[~frame.isnan()] == inside.min()).all())


def test_framing_is_decided_per_image_with_each_channel_minimum():
    whole, inside = head(40), head(80)[..., 20:60, 20:60]
    batch = torch.cat([whole, inside]).repeat(1, 3, 1, 1) + torch.tensor([0.0, 0.1, -0.2])[None, :, None, None]
    padded = add_margin(batch, 3)
    torch.testing.assert_close(padded[:1], F.pad(batch[:1], (3, 3, 3, 3), mode="reflect"))
    lowest = batch[1].amin(dim=(1, 2))
    torch.testing.assert_close(padded[1, :, 0, 0], lowest)
    torch.testing.assert_close(padded[1, :, -1, 20], lowest)
    torch.testing.assert_close(padded[1, :, 3:-3, 3:-3], batch[1])


def test_the_enhancer_and_the_shipped_bundle_use_the_margin():
    rng = np.random.default_rng(0)
    image = np.full((30, 44), 30, np.uint8)  # air at the border: reflected
    image[4:-4, 4:-4] = rng.integers(60, 256, (22, 36))
    marked = Enhancer(edge_marking_network(), device="cpu", cache_compiled=False, margin=0)
    kept = Enhancer(edge_marking_network(), device="cpu", cache_compiled=False, margin=4)
    reflected = nn.functional.pad(torch.from_numpy(image / 127.5 - 1)[None, None].float(), (4,) * 4, mode="reflect")
    direct = edge_marking_network()(reflected)[..., 4:-4, 4:-4]
    expected = np.clip(np.rint((direct[0, 0].detach().numpy() + 1) * 127.5), 0, 255)
    np.testing.assert_allclose(kept.enhance(image), expected, atol=1)
    assert np.abs(marked.enhance(image).astype(int) - expected).max() > 20  # the edges differ without it
    cut = image[6:-6, 6:-6]  # tissue at the border: framed by its minimum
    lowest = cut.min() / 127.5 - 1
    framed = nn.functional.pad(torch.from_numpy(cut / 127.5 - 1)[None, None].float(), (4,) * 4, value=lowest)
    direct = edge_marking_network()(framed)[..., 4:-4, 4:-4]
    expected = np.clip(np.rint((direct[0, 0].detach().numpy() + 1) * 127.5), 0, 255)
    np.testing.assert_allclose(kept.enhance(np.ascontiguousarray(cut)), expected, atol=1)
    assert load_enhancer(device="cpu").margin == DEFAULT_MARGIN == 16  # the bundle's configs/inference.json too
    assert Enhancer(edge_marking_network(), device="cpu").margin == DEFAULT_MARGIN


def test_a_volume_is_decided_once_and_framed_by_its_own_minimum():
    air = -1 + torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0)) * 0.05  # an empty end slice
    head_in_air = torch.cat([air, head(48), head(48)])
    alone = add_margin(head_in_air, 4)  # judged on its own, the noise of the empty slice looks like tissue
    assert bool((alone[0, 0, :4] == air.min()).all())
    together = add_margin(head_in_air, 4, group=3)
    torch.testing.assert_close(together, F.pad(head_in_air, (4, 4, 4, 4), mode="reflect"))
    cut = torch.cat([head(96)[..., 28:68, 30:70], head(96)[..., 29:69, 30:70] + 0.1])
    framed = add_margin(cut, 4, group=2)
    assert bool((framed[:, :, :4] == cut.min()).all())  # one frame for the volume: its minimum
    volume = head_in_air.permute(1, 0, 2, 3)[None]  # (B, C, D, H, W): the inferer's volumes
    out = EnhancementInferer(tile_size=64, margin=4)(volume, edge_marking_network())
    direct = edge_marking_network()(F.pad(head_in_air, (4, 4, 4, 4), mode="reflect"))[..., 4:-4, 4:-4]
    torch.testing.assert_close(out[0].permute(1, 0, 2, 3), direct)
    with pytest.raises(ValueError, match="groups of 2"):
        add_margin(head_in_air, 4, group=2)


def test_the_enhancer_gives_the_slices_of_a_volume_one_context():
    rng = np.random.default_rng(1)
    volume = np.full((3, 30, 44), 30, np.uint8)
    volume[1:, 4:-4, 4:-4] = rng.integers(60, 256, (2, 22, 36))
    volume[0] = rng.integers(25, 36, (30, 44))  # an empty end slice: noise, which alone would be framed
    enhancer = Enhancer(edge_marking_network(), device="cpu", cache_compiled=False, margin=4)
    x = torch.from_numpy(volume / 127.5 - 1).float()[:, None]
    assert border_tissue_share(x[:1]).item() > 0.5 and border_tissue_share(x, group=3).item() < 0.5
    direct = edge_marking_network()(nn.functional.pad(x, (4,) * 4, mode="reflect"))[:, 0, 4:-4, 4:-4]
    expected = np.clip(np.rint((direct.detach().numpy() + 1) * 127.5), 0, 255)
    np.testing.assert_allclose(enhancer.enhance(volume), expected, atol=1)
