"""One LaMEGAN training iteration: the bundle's trainer against a plain eager loop.

Both run the same networks, losses, image pools and optimizers on the same batch; the
baseline is a hand-written CycleGAN step in the style of the reference implementation
(no engine, separate discriminator calls). Times come from one process per size with the
two methods' iterations interleaved; peak memory from a fresh process per method.
Reported: median seconds per iteration, the ratio eager / trainer (> 1: the trainer is
faster), peak memory (resident set on CPU, ``max_memory_allocated`` on CUDA).

Usage::

    python -m benchmarks.bench_train            # paper size (RGB, ngf 64, 9 blocks, 256x256) and compact
    python -m benchmarks.bench_train --quick    # tiny sizes, seconds; CI smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.machine import family_page, peak_rss_mb
from benchmarks.pages import command, training_page, write_page
from benchmarks.timing import time_calls
from napari_uspmie.inference.checkpoint import shipped_architecture

CASES = {
    # name: (generator kwargs, ndf, patch size, perceptual loss, pyramid level)
    "paper": ({"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9}, 64, 256, "vgg19", 3),
    "compact": (  # the shipped architecture without its norm (the trainer's default)
        {k: v for k, v in shipped_architecture().items() if k != "norm"},
        32,
        128,
        "lassim",
        2,
    ),
    "tiny": ({"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2}, 8, 64, "lassim", 2),
}
REPO = Path(__file__).resolve().parents[1]  # the children run as modules from the repository root


def _peak_memory_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()


def _setup(case: str, device: torch.device):
    from napari_uspmie.models.losses import LaplacianPerceptualLoss
    from napari_uspmie.models.networks import PatchDiscriminator, ResnetGenerator, VGG19Features

    gen_kwargs, ndf, patch, kind, level = CASES[case]
    torch.manual_seed(0)
    c = gen_kwargs["in_channels"]
    nets = [ResnetGenerator(**gen_kwargs), ResnetGenerator(**gen_kwargs), PatchDiscriminator(c, ndf=ndf)]
    nets.append(PatchDiscriminator(c, ndf=ndf))
    nets = [n.to(device) for n in nets]
    # Random VGG weights: the compute is the paper's; the real file cannot be downloaded here.
    features = VGG19Features() if kind == "vgg19" else None
    perceptual = LaplacianPerceptualLoss(kind, level=level, features=features).to(device)
    opt_g = torch.optim.Adam([*nets[0].parameters(), *nets[1].parameters()], lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*nets[2].parameters(), *nets[3].parameters()], lr=2e-4, betas=(0.5, 0.999))
    batch = {"A": torch.rand(1, c, patch, patch) * 2 - 1, "B": torch.rand(1, c, patch, patch) * 2 - 1}
    return nets, perceptual, opt_g, opt_d, batch


def _eager_step(nets, perceptual, opt_g, opt_d, pools, batch, device) -> None:
    """CycleGAN's optimize_parameters, written out: the baseline."""
    from napari_uspmie.models.losses import LSGANLoss

    g_a, g_b, d_a, d_b = nets
    gan, l1 = LSGANLoss(), torch.nn.L1Loss()
    real_a, real_b = batch["A"].to(device), batch["B"].to(device)
    fake_b = g_a(real_a)
    rec_a = g_b(fake_b)
    fake_a = g_b(real_b)
    rec_b = g_a(fake_a)
    for p in [*d_a.parameters(), *d_b.parameters()]:
        p.requires_grad_(False)
    opt_g.zero_grad()
    loss_g = gan(d_a(fake_b), True) + gan(d_b(fake_a), True) + 10 * l1(rec_a, real_a) + 10 * l1(rec_b, real_b)
    loss_g = loss_g + 0.25 * perceptual(real_a, fake_b) + 0.25 * perceptual(real_b, fake_a)
    loss_g.backward()
    opt_g.step()
    for p in [*d_a.parameters(), *d_b.parameters()]:
        p.requires_grad_(True)
    opt_d.zero_grad()
    pooled_b, pooled_a = pools[1].query(fake_b), pools[0].query(fake_a)
    loss_d_a = 0.5 * (gan(d_a(real_b), True) + gan(d_a(pooled_b.detach()), False))
    loss_d_b = 0.5 * (gan(d_b(real_a), True) + gan(d_b(pooled_a.detach()), False))
    (loss_d_a + loss_d_b).backward()
    opt_d.step()
    loss_g.detach().item()  # the reference logs its losses every iteration too


def _make_trainer(setup, device: torch.device):
    from napari_uspmie.training.trainer import CycleGANTrainer

    nets, perceptual, opt_g, opt_d, batch = setup
    # One iteration per run(): ignite restarts a finished engine, so each call is one full step.
    return CycleGANTrainer(
        device, 1, [batch], *nets, opt_g, opt_d, perceptual_loss=perceptual, pool_size=100, amp=device.type == "cuda"
    )


def _make_eager(setup, device: torch.device):
    from napari_uspmie.training.image_pool import ImagePool

    nets, perceptual, opt_g, opt_d, batch = setup
    pools = (ImagePool(100, seed=0), ImagePool(100, seed=1))
    return lambda: _eager_step(nets, perceptual, opt_g, opt_d, pools, batch, device)


def run_timing(case: str, repeats: int, device_name: str) -> dict:
    """Both methods in one process, iterations interleaved, so that load drifts hit both alike."""
    device = torch.device(device_name)
    steps = {
        "trainer": _make_trainer(_setup(case, device), device).run,
        "eager": _make_eager(_setup(case, device), device),
    }
    # One warm-up each (allocator, oneDNN/cuDNN kernels, Adam state); the order flips every iteration.
    times = time_calls(steps, repeats, device, alternate=True)
    return {m: {"seconds": statistics.median(t), "all_seconds": t} for m, t in times.items()}


def run_memory(case: str, method: str, device_name: str) -> dict:
    """Peak memory of the first iteration (it allocates Adam's state too), alone in a fresh process."""
    import napari_uspmie.training.trainer  # noqa: F401  both methods carry MONAI/Ignite, so baselines match

    device = torch.device(device_name)
    setup = _setup(case, device)
    before = _peak_memory_mb(device)
    step = _make_trainer(setup, device).run if method == "trainer" else _make_eager(setup, device)
    step()
    return {"peak_mb": _peak_memory_mb(device), "before_mb": before}


def _in_subprocess(*args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_train", "--child", json.dumps(list(args))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny and compact sizes, 3 timed iterations (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per method and case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="report path (default: the family's page in docs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = json.loads(args.child)
        print(json.dumps(run_timing(*rest) if kind == "timing" else run_memory(*rest)))
        return 0
    cases = ["tiny", "compact"] if args.quick else ["compact", "paper"]
    on_cpu = not args.device.startswith("cuda")
    out = args.out
    if out is None and not args.quick:
        out = REPO / "docs" / family_page("training")
    results = []
    notes = []
    for case in cases:
        # The paper-size iteration takes about 5 s on a 2-core CPU; with two timed iterations its
        # median moved by 6% between runs, five keep it within the 2-3% the iterations vary by.
        repeats = args.repeats or (5 if on_cpu and case == "paper" else 3 if args.quick else 7)
        notes.append(f"{repeats} ({case})")
        timing = _in_subprocess("timing", case, repeats, args.device)
        row = {"case": case}
        for method in ("trainer", "eager"):
            memory = _in_subprocess("memory", case, method, args.device)
            row[method] = {**timing[method], **memory}
            print(
                f"{case:8s} {method:8s} {row[method]['seconds']:.3f} s/it  peak {memory['peak_mb']:.0f} MB",
                flush=True,
            )
        results.append(row)
    networks = {}
    for case in cases:
        gen, ndf, patch, kind, _ = CASES[case]
        networks[case] = (
            f"{gen['in_channels']}ch ngf {gen['ngf']} / {gen['n_blocks']} blocks, ndf {ndf}, {kind}",
            patch,
        )
    quoted = command("bench_train", argv if argv is not None else sys.argv[1:])
    text = training_page(results, args.device, quoted, "timed iterations: " + ", ".join(notes), networks)
    print(text)
    if out is not None:
        write_page(out, text, {"device": args.device, "threads": torch.get_num_threads(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
