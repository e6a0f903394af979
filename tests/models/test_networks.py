"""LaMEGAN networks: the paper's parameter counts, shapes, initialisation, VGG19 slice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_uspmie.models.networks import PatchDiscriminator, ResnetGenerator, VGG19Features, make_norm


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_paper_parameter_counts():
    assert n_params(ResnetGenerator()) == 11_378_179  # 3 -> 3 channels, ngf 64, 9 blocks
    assert n_params(ResnetGenerator(in_channels=1, out_channels=1)) == 11_365_633
    assert n_params(PatchDiscriminator()) == 2_764_737


def test_discriminator_patch_map_for_256():
    d = PatchDiscriminator(in_channels=1, ndf=8)
    assert d(torch.zeros(2, 1, 256, 256)).shape == (2, 1, 30, 30)


@pytest.mark.parametrize(("channels", "size"), [(1, (64, 64)), (3, (64, 96)), (1, (68, 120))])
def test_generator_keeps_size_and_range(channels, size):
    g = ResnetGenerator(channels, channels, ngf=8, n_blocks=2)
    with torch.no_grad():
        y = g(torch.randn(1, channels, *size) * 3)
    assert y.shape == (1, channels, *size)
    assert float(y.abs().max()) <= 1.0  # tanh head


def test_compact_shipped_architecture(shipped_architecture):
    g = ResnetGenerator(**shipped_architecture)
    channels_in, channels_out = shipped_architecture["in_channels"], shipped_architecture["out_channels"]
    with torch.no_grad():
        assert g(torch.zeros(1, channels_in, 128, 128)).shape == (1, channels_out, 128, 128)
    assert n_params(g) < 1_000_000  # a few MB as a float32 state dict


def test_init_normal_002_and_zero_bias():
    g = ResnetGenerator(ngf=16, n_blocks=3)
    weights = torch.cat(
        [m.weight.detach().flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    )
    biases = torch.cat(
        [m.bias.detach().flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    )
    assert abs(float(weights.std()) - 0.02) < 0.001
    assert abs(float(weights.mean())) < 0.001
    assert float(biases.abs().max()) == 0.0


def test_instance_norm_has_no_affine_or_running_stats():
    g = ResnetGenerator(ngf=8, n_blocks=1)
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert not any(k.endswith(("running_mean", "running_var")) for k in g.state_dict())
    with pytest.raises(ValueError, match="norm must be"):
        make_norm("group", 8)


def test_vgg19_slice_uses_torchvision_keys_and_is_frozen():
    vgg = VGG19Features()
    keys = set(vgg.state_dict())
    assert keys == {f"features.{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias")}
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    assert vgg(torch.zeros(1, 3, 32, 48)).shape == (1, 128, 8, 12)  # two max-pools


def test_vgg19_loads_full_state_dict_and_rejects_wrong_shapes():
    src = VGG19Features()
    torch.nn.init.normal_(src.features[0].weight)
    full = dict(src.state_dict())
    full["features.10.weight"] = torch.zeros(256, 128, 3, 3)  # layers past pool2 are ignored
    dst = VGG19Features()
    dst.load_torchvision_state_dict(full)
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    full["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(ValueError, match="do not fit"):
        dst.load_torchvision_state_dict(full)
    with pytest.raises(ValueError, match="lack"):
        dst.load_torchvision_state_dict({"features.0.weight": torch.zeros(64, 3, 3, 3)})
