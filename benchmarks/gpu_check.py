"""The GPU check: what a GPU gives, measured in one short run, written beside the CPU pages.

    make gpu-check                                   # CUDA test subset, then this with --device cuda
    python -m benchmarks.gpu_check --device cuda --out docs/benchmarks_gpu.md
    python -m benchmarks.gpu_check --device cpu --quick --out outputs/gpu_check.md   # the code path, on CPU

Measures, on the device:

* enhancement of a 200 x 256 x 256 volume through the enhancer's default path (fp16 autocast on
  CUDA), with the shipped generator and the paper's (ngf 64, 9 blocks): slices/s and seconds per
  volume, against a plain eager fp32 per-slice loop in the same run;
* LaSSIM pairs/s at batch 16 (272 x 480 RGB);
* training iterations/s of the paper configuration (256 crops, VGG19 perceptual term) with AMP;
* peak GPU memory of each (``torch.cuda.max_memory_allocated``).

Target (issue: performance): the 200-slice volume in under 1 s with the paper's generator.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_enhance import MODELS, eager_forward, make_network
from benchmarks.bench_train import run_timing
from benchmarks.machine import machine_info
from benchmarks.pages import command, write_page
from napari_uspmie.inference.enhancer import Enhancer
from napari_uspmie.metric.lassim import lassim

FULL = {"volume": (200, 256), "lassim": (16, 272, 480), "train_case": "paper", "repeats": 3}
QUICK = {"volume": (4, 64), "lassim": (2, 64, 96), "train_case": "tiny", "repeats": 1}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: cuDNN autotuning, allocator, autocast caches
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def enhancement_rows(device: torch.device, sizes: dict, quick: bool) -> list[dict]:
    """Seconds per volume: the enhancer's default path and an eager fp32 loop, shipped and paper generators."""
    depth, side = sizes["volume"]
    rng = np.random.default_rng(0)
    volume = (rng.random((depth, side, side)) * 2000).astype(np.int16)
    rows = []
    for model in ("tiny",) if quick else ("shipped", "paper"):
        rows.append(_enhancement_row(model, volume, device, sizes["repeats"]))
    return rows


def _enhancement_row(model: str, volume: np.ndarray, device: torch.device, repeats: int) -> dict:
    depth, side = volume.shape[0], volume.shape[1]
    net = make_network(model).to(device)
    # the enhancer feeds a grey volume to an RGB generator as three equal channels
    enhancer = Enhancer(net, device=device, amp=device.type == "cuda", batch_size=8)
    x = torch.rand(depth, MODELS[model]["in_channels"], side, side) * 2 - 1
    _reset_peak(device)
    default = _median_seconds(lambda: enhancer.enhance(volume), device, repeats)
    peak = _peak_mb(device)
    eager = _median_seconds(lambda: eager_forward(net, x, 8, device), device, repeats)
    return {"model": model, "slices": depth, "side": side, "default_s": default, "eager_s": eager,
            "slices_per_s": depth / default, "peak_mb": peak}  # fmt: skip


def lassim_row(device: torch.device, sizes: dict) -> dict:
    batch, height, width = sizes["lassim"]
    a = torch.rand(batch, 3, height, width, device=device)
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    _reset_peak(device)
    seconds = _median_seconds(lambda: lassim(a, b), device, max(3, sizes["repeats"]))
    return {"batch": batch, "size": f"{height}x{width}", "seconds": seconds, "pairs_per_s": batch / seconds,
            "peak_mb": _peak_mb(device)}  # fmt: skip


def training_row(device: torch.device, sizes: dict) -> dict:
    _reset_peak(device)
    timing = run_timing(sizes["train_case"], sizes["repeats"] + 1, str(device))
    trainer, eager = timing["trainer"]["seconds"], timing["eager"]["seconds"]
    return {"case": sizes["train_case"], "trainer_s": trainer, "eager_s": eager, "iterations_per_s": 1 / trainer,
            "peak_mb": _peak_mb(device)}  # fmt: skip


def gpu_page(result: dict, cmd: str) -> str:
    info = result["machine"]
    lines = [
        "# GPU check",
        "",
        f"Device: {result['device_name']}; CPU {info.get('cpu', '?')}; torch {torch.__version__}. Command: `{cmd}`.",
        "",
        "| generator | volume | default path (s) | slices/s | eager fp32 loop (s) | speed-up | peak GPU MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["enhancement"]:
        lines.append(
            f"| {r['model']} | {r['slices']} x {r['side']} x {r['side']} | {r['default_s']:.3f} | "
            f"{r['slices_per_s']:.1f} | {r['eager_s']:.3f} | {r['eager_s'] / r['default_s']:.2f}x | "
            f"{r['peak_mb']:.0f} |"
        )
    la, tr = result["lassim"], result["training"]
    lines += [
        "",
        f"LaSSIM: batch {la['batch']} of {la['size']} RGB pairs: {la['pairs_per_s']:.1f} pairs/s "
        f"(peak {la['peak_mb']:.0f} MB).",
        "",
        f"Training ({tr['case']} configuration, AMP on CUDA): {tr['iterations_per_s']:.2f} iterations/s "
        f"(eager reference loop {1 / tr['eager_s']:.2f}/s; peak {tr['peak_mb']:.0f} MB).",
    ]
    paper = [r for r in result["enhancement"] if r["model"] == "paper"]
    if paper:
        met = paper[0]["default_s"] < 1.0
        lines += ["", f"Target: 200-slice volume with the paper's generator in < 1 s: {paper[0]['default_s']:.2f} s, "
                  f"{'met' if met else 'NOT met'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --quick: the code path)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the code runs, measures nothing")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks_gpu.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: no CUDA GPU here; run with --device cpu --quick to check the code path.\n")
    sizes = QUICK if args.quick else FULL
    result = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "machine": machine_info(),
        "enhancement": enhancement_rows(device, sizes, args.quick),
        "lassim": lassim_row(device, sizes),
        "training": training_row(device, sizes),
    }
    argv_shown = ["--device", args.device, *(["--quick"] if args.quick else []), "--out", str(args.out)]
    page = gpu_page(result, command("gpu_check", argv_shown))
    write_page(args.out, page, result)
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
