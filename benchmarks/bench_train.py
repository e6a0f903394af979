"""One LaMEGAN training iteration: the bundle's trainer against a plain eager loop.

Both run the same networks, losses, image pools and optimizers on the same batch; the
baseline is a hand-written CycleGAN step in the style of the reference implementation
(no engine, separate discriminator calls). Each (size, method) case runs in a fresh
process so that its peak memory is its own. Reported: median seconds per iteration,
the ratio eager / trainer (> 1: the trainer is faster), peak memory (resident set on
CPU, ``max_memory_allocated`` on CUDA).

Usage::

    python benchmarks/bench_train.py            # paper size (RGB, ngf 64, 9 blocks, 256x256) and compact
    python benchmarks/bench_train.py --quick    # tiny sizes, seconds; CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CASES = {
    # name: (generator kwargs, ndf, patch size, perceptual loss, pyramid level)
    "paper": ({"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9}, 64, 256, "vgg19", 3),
    "compact": ({"in_channels": 1, "out_channels": 1, "ngf": 16, "n_blocks": 6}, 32, 128, "lassim", 2),
    "tiny": ({"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2}, 8, 64, "lassim", 2),
}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _setup(case: str, device: torch.device):
    from napari_uspmie.losses import LaplacianPerceptualLoss
    from napari_uspmie.networks import PatchDiscriminator, ResnetGenerator, VGG19Features

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
    from napari_uspmie.losses import LSGANLoss

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
    float(loss_g)  # the reference logs its losses every iteration too


def run_case(case: str, method: str, repeats: int, device_name: str) -> dict:
    """Time ``repeats`` iterations after one warm-up; runs inside a fresh process."""
    from napari_uspmie.engine import CycleGANTrainer
    from napari_uspmie.image_pool import ImagePool

    device = torch.device(device_name)
    nets, perceptual, opt_g, opt_d, batch = _setup(case, device)
    rss_before = _peak_memory_mb(device) if device.type == "cpu" else 0.0
    times: list[float] = []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if method == "trainer":
        data = [batch] * (repeats + 1)
        trainer = CycleGANTrainer(
            device, 1, data, *nets, opt_g, opt_d, perceptual_loss=perceptual, pool_size=100, amp=device.type == "cuda"
        )
        from ignite.engine import Events

        clock = {}

        @trainer.on(Events.ITERATION_STARTED)
        def _start(engine):
            sync()
            clock["t"] = time.perf_counter()

        @trainer.on(Events.ITERATION_COMPLETED)
        def _stop(engine):
            sync()
            times.append(time.perf_counter() - clock["t"])

        trainer.run()
        times = times[1:]
    else:
        pools = (ImagePool(100, seed=0), ImagePool(100, seed=1))
        for i in range(repeats + 1):
            sync()
            t = time.perf_counter()
            _eager_step(nets, perceptual, opt_g, opt_d, pools, batch, device)
            sync()
            if i:
                times.append(time.perf_counter() - t)
    return {
        "case": case,
        "method": method,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "peak_mb": _peak_memory_mb(device),
        "rss_before_mb": rss_before,
        "threads": torch.get_num_threads(),
    }


def _in_subprocess(case: str, method: str, repeats: int, device: str) -> dict:
    args = [sys.executable, __file__, "--child", json.dumps([case, method, repeats, device])]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_report(results: list[dict], device: str, path: Path, command: str) -> str:
    lines = [
        "# Training iteration benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {_machine(device)}; device `{device}`.",
        "",
        "One full LaMEGAN iteration (both cycles, generator step with the Laplacian perceptual loss, both",
        "discriminators with image pools), median of the timed iterations after a warm-up. `eager` is a",
        "hand-written CycleGAN step over the same networks; ratio = eager / trainer (> 1: the trainer is faster).",
        "Peak memory: resident set of the process on CPU (`before` = after building the networks),",
        "`torch.cuda.max_memory_allocated` on CUDA. Each case runs in its own process.",
        "",
        "| case | networks | patch | method | s / iteration | ratio | peak memory (MB) | before (MB) |",
        "|------|----------|-------|--------|---------------|-------|------------------|-------------|",
    ]
    by_case: dict[str, dict[str, dict]] = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["method"]] = r
    for case, methods in by_case.items():
        gen, ndf, patch, kind, _ = CASES[case]
        nets = f"{gen['in_channels']}ch ngf {gen['ngf']} / {gen['n_blocks']} blocks, ndf {ndf}, {kind}"
        ratio = methods["eager"]["seconds"] / methods["trainer"]["seconds"]
        for method in ("trainer", "eager"):
            r = methods[method]
            shown = f"{ratio:.2f}" if method == "trainer" else ""
            lines.append(
                f"| {case} | {nets} | {patch} | {method} | {r['seconds']:.3f} | {shown} | {r['peak_mb']:.0f} "
                f"| {r['rss_before_mb']:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny and compact sizes, 2 iterations (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="report path (default docs/benchmarks_training.md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, method, repeats, device = json.loads(args.child)
        print(json.dumps(run_case(case, method, repeats, device)))
        return 0
    cases = ["tiny", "compact"] if args.quick else ["compact", "paper"]
    repeats = args.repeats or (2 if args.quick else 3)
    out = args.out
    if out is None and not args.quick:
        out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks_training.md"
    results = []
    for case in cases:
        for method in ("trainer", "eager"):
            r = _in_subprocess(case, method, repeats, args.device)
            print(f"{case:8s} {method:8s} {r['seconds']:.3f} s/it  peak {r['peak_mb']:.0f} MB", flush=True)
            results.append(r)
    command = "python benchmarks/bench_train.py" + (" --quick" if args.quick else "")
    print(write_report(results, args.device, out, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
