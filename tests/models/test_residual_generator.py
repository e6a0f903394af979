"""The generator's residual option: a correction added to the input, recognised from its weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_uspmie.inference.checkpoint import infer_architecture, load_generator
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.models.networks import ResnetGenerator


def _ramp(size: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return (0.6 * torch.sin(5 * x) * torch.cos(3 * y))[None, None]


def _perturbed(net: ResnetGenerator) -> ResnetGenerator:
    torch.manual_seed(0)
    for p in net.parameters():
        if p.ndim == 4:
            nn.init.normal_(p, 0.0, 0.2)
    return net.eval()


def _silenced(net: ResnetGenerator) -> ResnetGenerator:
    head = net.model[-2]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return net.eval()


def test_the_skip_carries_the_input_and_the_papers_form_does_not():
    x = _ramp()
    with torch.no_grad():
        residual = _silenced(ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize", residual=True))(x)
        paper = _silenced(ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize"))(x)
        fresh = ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize", residual=True).eval()(x)
    assert torch.equal(residual, x)  # a head that says "change nothing" returns the input exactly
    assert torch.equal(paper, torch.zeros_like(x))  # the paper's form has no input to fall back on
    assert float((fresh - x).abs().mean()) > 0.05  # the paper's init: training does not start at the identity


def test_a_trained_residual_generator_changes_the_input_within_range_and_keeps_parameter_count():
    plain = ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize")
    residual = _perturbed(ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize", residual=True))
    assert sum(p.numel() for p in residual.parameters()) == sum(p.numel() for p in plain.parameters())
    x = _ramp()
    with torch.no_grad():
        y = residual(x)
    assert y.shape == x.shape and float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    # the correction can move any value anywhere in range: both ends are reached
    assert float((y - x).abs().max()) > 0.5
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        ResnetGenerator(3, 1, residual=True)


def test_residual_weights_are_recognised_loaded_scripted_and_streamed(tmp_path):
    net = _perturbed(ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize", residual=True))
    state = net.state_dict()
    assert "residual_scale" in state
    assert "residual_scale" not in ResnetGenerator(1, 1, ngf=8, n_blocks=2).state_dict()
    assert infer_architecture(state)["residual"] is True
    assert "residual" not in infer_architecture(ResnetGenerator(1, 1, ngf=8, n_blocks=2).state_dict())
    torch.save(state, tmp_path / "model.pt")  # no model_config.json: the weights alone tell
    loaded, architecture = load_generator(tmp_path / "model.pt")
    x = _ramp(96)
    with torch.no_grad():
        eager = net(x)
        torch.testing.assert_close(loaded(x), eager)
        torch.testing.assert_close(torch.jit.script(net)(x), eager)
    assert architecture["residual"] is True
    streamed = EnhancementInferer(tile_size=32)(x, net)  # 96 px over 32 px tiles: layer by layer
    assert float((streamed - eager).abs().max()) < 1e-4
    # a paper generator cannot take residual weights: the mismatch is named
    (tmp_path / "model_config.json").write_text('{"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2}')
    with pytest.raises(ValueError, match="residual"):
        load_generator(tmp_path / "model.pt")
