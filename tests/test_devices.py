"""Every compute path on every device this machine has: the CPU always, CUDA when present (``make gpu-check``).

Each test runs the device path against the CPU fp32 reference, so on a CPU-only machine it checks
the CPU path and on a GPU machine also CUDA with AMP (float16 autocast).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_uspmie.inference.enhancer import Enhancer
from napari_uspmie.metric.lassim import lassim
from napari_uspmie.models.losses import LaplacianPerceptualLoss
from napari_uspmie.models.networks import PatchDiscriminator, ResnetGenerator
from napari_uspmie.training.trainer import CycleGANTrainer
from tests.io_factories import mni_slices
from tests.unpaired_data import TINY_GENERATOR

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_enhancer_on_device_matches_the_cpu_reference(device):
    torch.manual_seed(0)
    net = ResnetGenerator(**TINY_GENERATOR).eval()
    volume = mni_slices(4, step=2).astype(np.int16) * 8
    reference = Enhancer(net, device="cpu", amp=False).enhance(volume)
    out = Enhancer(net, device=device, amp=True).enhance(volume)  # AMP: float16 autocast on CUDA only
    assert out.shape == volume.shape and out.dtype == volume.dtype
    tolerance = 0 if device == "cpu" else 0.02 * float(np.ptp(volume))
    np.testing.assert_allclose(out.astype(np.float64), reference.astype(np.float64), atol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
def test_lassim_on_device_matches_the_cpu_reference(device):
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((4, 3, 96, 128))).float()
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    reference = lassim(a, b)
    torch.testing.assert_close(lassim(a.to(device), b.to(device)).cpu(), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_one_training_iteration_with_amp_on_device(device):
    torch.manual_seed(0)
    nets = [ResnetGenerator(**TINY_GENERATOR), ResnetGenerator(**TINY_GENERATOR), PatchDiscriminator(1, ndf=8),
            PatchDiscriminator(1, ndf=8)]  # fmt: skip
    nets = [n.to(device) for n in nets]
    opt_g = torch.optim.Adam([*nets[0].parameters(), *nets[1].parameters()], lr=2e-4)
    opt_d = torch.optim.Adam([*nets[2].parameters(), *nets[3].parameters()], lr=2e-4)
    batch = {"A": torch.rand(1, 1, 64, 64) * 2 - 1, "B": torch.rand(1, 1, 64, 64) * 2 - 1}
    before = [p.detach().clone() for p in nets[0].parameters()]
    trainer = CycleGANTrainer(device, 1, [batch], *nets, opt_g, opt_d, pool_size=2, amp=True,
                              perceptual_loss=LaplacianPerceptualLoss("lassim", level=2).to(device))  # fmt: skip
    trainer.run()
    losses = trainer.state.output
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, nets[0].parameters(), strict=True))
