"""The generator's upsampling option: the paper's transposed convolutions or the checkerboard-free resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_uspmie.metric.checkerboard import checkerboard_index
from napari_uspmie.models.networks import ResizeConv2d, ResnetGenerator

#: parameters of the paper's generator (METHOD.md): the resize variant has the same count
PAPER_PARAMETERS = {3: 11_378_179, 1: 11_365_633}


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
@pytest.mark.parametrize("channels", [3, 1])
def test_both_variants_have_the_papers_parameter_count_and_keep_the_size(upsample, channels):
    net = ResnetGenerator(channels, channels, upsample=upsample)
    assert sum(p.numel() for p in net.parameters()) == PAPER_PARAMETERS[channels]
    small = ResnetGenerator(channels, channels, ngf=8, n_blocks=1, upsample=upsample)
    assert small(torch.zeros(2, channels, 36, 52)).shape == (2, channels, 36, 52)


def test_resize_variant_uses_resize_convolutions_and_names_them():
    net = ResnetGenerator(1, 1, ngf=8, n_blocks=2, upsample="resize")
    ups = [m for m in net.modules() if isinstance(m, ResizeConv2d)]
    assert len(ups) == 2 and not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert net.upsample == "resize"
    with pytest.raises(ValueError, match="upsample must be one of"):
        ResnetGenerator(upsample="pixelshuffle")


def test_untrained_transpose_generators_print_a_checkerboard_and_resize_ones_do_not():
    y, x = np.mgrid[0:128, 0:128]
    smooth = torch.tensor((np.sin(x / 9.0) + np.cos(y / 13.0)) / 2, dtype=torch.float32)[None, None]
    scores = {}
    for upsample in ("transpose", "resize"):
        values = []
        for seed in range(3):
            torch.manual_seed(seed)
            net = ResnetGenerator(1, 1, ngf=16, n_blocks=2, upsample=upsample).eval()
            with torch.no_grad():
                values.append(checkerboard_index(net(smooth)[0, 0].numpy()))
        scores[upsample] = max(values)
    assert scores["resize"] < 0.01 < scores["transpose"]
