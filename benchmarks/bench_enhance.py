"""Enhancement throughput against a plain eager fp32 forward of the same weights.

For the shipped generator (grey, ngf 16, 6 residual blocks) and the paper's (RGB, ngf 64,
9 blocks), random weights (speed does not depend on them):

* the baselines: ``network(x)`` in fp32 under ``no_grad`` on a ready [-1, 1] tensor, ``batch``
  images per call, results back on the CPU; and the same one image (slice) per call;
* ``Enhancer().enhance``, every setting at its default: numpy in, numpy out (intensity window and
  back, layout, padding, batching of slices, tiling); on the CPU the network runs from its compiled
  library in the per-user cache (:mod:`napari_uspmie.inference.compiled_cache`), built into a fresh
  cache before timing, as the first run on a machine builds it in the background (quick mode: eager);
* ``Enhancer(compile=True).enhance``: the network through ``torch.compile`` (Inductor, frozen
  weights; on CPU 3x3 convolutions of 128 channels or more by Winograd F(4x4, 3x3)), ``batch``
  images per call; its first call per shape compiles and is reported apart;
* ``Enhancer(compile=True, bf16=True).enhance``: the opt-in bfloat16 path (autocast, compiled), with
  its difference from float32 and its fraction of the machine's bfloat16 matmul FLOP/s; only
  where the device has bfloat16 hardware (elsewhere it is emulated, and the enhancer warns).

Each case reports seconds (best of interleaved runs, so every side sees the same machine
load), the speedup over the baseline, the convolution FLOPs counted from the layer shapes,
the achieved fraction of the machine's measured matmul FLOP/s and the peak memory each side
adds. A second table times single inference techniques on the bare network.

Run from the repository root::

    python -m benchmarks.bench_enhance             # full run, writes docs/benchmarks_enhance_<CPU family>.md
    python -m benchmarks.bench_enhance --quick     # a tiny network, for CI
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.flops import conv_flops
from benchmarks.machine import PeakMemory, cpu_family, family_page, matmul_gflops
from benchmarks.pages import command, enhance_page, enhance_row, write_page
from benchmarks.timing import time_calls
from napari_uspmie.inference.checkpoint import shipped_architecture
from napari_uspmie.inference.compilation import compile_network, eager_layers
from napari_uspmie.inference.compiled_cache import artifact_key, artifact_path, build_artifact, save_build_source
from napari_uspmie.inference.enhancer import Enhancer
from napari_uspmie.inference.precision import autocast_for, cpu_has_fast_bf16
from napari_uspmie.inference.winograd import to_winograd
from napari_uspmie.models.networks import ResnetGenerator

MODELS = {
    "shipped": shipped_architecture(),
    "paper": {"in_channels": 3, "out_channels": 3, "ngf": 64, "n_blocks": 9, "norm": "instance"},
    "tiny": {"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2, "norm": "instance"},
}
# (label, images, side, images per call); a "volume" label marks a (D, H, W) grey volume.
FULL_CASES = {
    "shipped": [
        ("2D 256x256, batch 1", 1, 256, 1),
        ("8 images 256x256, batch 8", 8, 256, 8),
        ("2D 512x512, batch 1", 1, 512, 1),
        ("8 images 512x512, batch 8", 8, 512, 8),
        ("3D volume 48x256x256, batch 8", 48, 256, 8),
    ],
    "paper": [
        ("2D 256x256, batch 1", 1, 256, 1),
        ("8 images 256x256, batch 8", 8, 256, 8),
        ("2D 512x512, batch 1", 1, 512, 1),
    ],
}
QUICK_CASES = {"tiny": [("2D 64x64, batch 1", 1, 64, 1), ("3D volume 4x64x64, batch 2", 4, 64, 2)]}
TRIAL_CASE = {"shipped": (8, 256), "paper": (1, 256), "tiny": (2, 64)}
#: the eager CPU path without a compiled library (resize-convolutions as phase filters, depthwise-sum head)
EAGER_DEFAULT = "phase-filter upsampling and depthwise + sum head, eager (what the CPU runs without a library)"
COMPILED_DEFAULT = (
    "torch.compile + Winograd (layers of 128+ channels) and depthwise-sum head on CPU (what `compile=True` runs)"
)


def make_network(model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return ResnetGenerator(**MODELS[model]).eval()


def make_array(images: int, side: int, channels: int, volume: bool) -> np.ndarray:
    """uint8 photographs (RGB when ``channels`` is 3) or an int16 volume, random content."""
    rng = np.random.default_rng(0)
    if volume:
        return (rng.random((images, side, side)) * 2000 - 1000).astype(np.int16)
    shape = (images, side, side) + ((3,) if channels == 3 else ())
    array = (rng.random(shape) * 255).astype(np.uint8)
    return array[0] if images == 1 else array


def eager_forward(net: torch.nn.Module, x: torch.Tensor, batch: int, device: torch.device) -> None:
    """The baseline: fp32 forward under no_grad, ``batch`` images per call, results back on the CPU."""
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            net(x[start : start + batch].to(device)).cpu()


def can_compile(device: torch.device) -> bool:
    """Inductor builds C++ kernels on CPU (g++) and Triton kernels on CUDA."""
    return device.type == "cuda" or shutil.which("g++") is not None


def use_fresh_cache() -> Path:
    """Point the compiled-library cache at a new empty folder (the user's own is left alone) and switch it on."""
    folder = Path(tempfile.mkdtemp(prefix="uspmie-bench-cache-"))
    os.environ["NAPARI_USPMIE_CACHE_DIR"] = str(folder)
    os.environ["NAPARI_USPMIE_COMPILED_CACHE"] = "on"
    return folder


def build_cached_library(net: torch.nn.Module, architecture: dict, folder: Path) -> float:
    """Build ``net``'s library into the cache as the background build would; its seconds."""
    weights = folder / "weights.pt"
    save_build_source(net, architecture, weights)
    start = time.perf_counter()
    build_artifact(weights, artifact_path(artifact_key(net, architecture)))
    return time.perf_counter() - start


def bench_model(
    model: str, cases: list, device: torch.device, repeats: int, peaks: dict[str, float], cache: Path | None = None
) -> list[dict]:
    """Every case of one model: the baselines (eager in the case's batches and one slice at a time), the
    enhancer at its defaults (from the compiled library built into ``cache`` first, when given), compiled
    (eager again without a compiler) and, where ``peaks`` has a bfloat16 figure (bfloat16 hardware),
    compiled in bfloat16."""
    net = make_network(model).to(device)
    channels = MODELS[model]["in_channels"]
    cache_build = build_cached_library(net, MODELS[model], cache) if cache is not None else None
    default_enh = Enhancer(net, device=device, architecture=MODELS[model])  # every setting at its default
    compiled = can_compile(device)
    compiled_enh = Enhancer(copy.deepcopy(net), device=device, tile_size=1024, batch_size=8, compile=compiled)
    with_bf16 = "bfloat16" in peaks
    if with_bf16:
        bf16_enh = Enhancer(
            copy.deepcopy(net), device=device, tile_size=1024, batch_size=8, compile=compiled, bf16=True
        )
    rows = []
    for label, images, side, batch in cases:
        array = make_array(images, side, channels, "volume" in label)
        x = torch.rand(images, channels, side, side) * 2 - 1
        sides = {
            "eager": lambda x=x, batch=batch: eager_forward(net, x, batch, device),
            "eager_slices": lambda x=x: eager_forward(net, x, 1, device),
            "enhance": lambda a=array: default_enh.enhance(a),
            "compiled": lambda a=array, b=batch: compiled_enh.enhance(a, batch_size=b),
        }
        if with_bf16:
            sides["bf16"] = lambda a=array, b=batch: bf16_enh.enhance(a, batch_size=b)
        t0 = time.perf_counter()
        sides["compiled"]()  # compiles for this shape
        first_call = time.perf_counter() - t0
        if with_bf16:
            sides["bf16"]()
        memory = {}
        for k, fn in sides.items():  # warm-up run of each side, its peak memory measured
            with PeakMemory(str(device)) as mem:
                fn()
            memory[k] = mem.extra_mb
        best = {k: min(t) for k, t in time_calls(sides, repeats, device, warmup=0).items()}
        with torch.no_grad():
            probe = x[:batch].to(device)
            reference = net(probe)
            diff = float((compiled_enh.runner(probe) - reference).abs().max())
            if with_bf16:
                with autocast_for(device, bf16=True):
                    bf16_diff = (bf16_enh.runner(probe).float() - reference).abs()
        flops = conv_flops(net, (images, channels, side, side))
        # What the compiled network runs: Winograd layers do fewer multiplications than the direct count.
        executed = conv_flops(compiled_enh.compiled_from, (images, channels, side, side))
        row = {"model": model, "case": label, "images": images, "first_call": first_call, "diff": diff}
        row["cache_build_s"] = cache_build
        if with_bf16:
            row |= {"bf16_diff_max": float(bf16_diff.max()), "bf16_diff_mean": float(bf16_diff.mean())}
            row |= {"peak_bf16": peaks["bfloat16"]}
        row |= {f"{k}_s": v for k, v in best.items()} | {f"{k}_mb": v for k, v in memory.items()}
        row |= {"gflop": flops / 1e9, "gflop_executed": executed / 1e9, "peak": peaks["float32"]}
        rows.append(row)
        print(enhance_row(row), flush=True)
    return rows


@contextlib.contextmanager
def _no_grad_bf16(device: torch.device):
    with torch.no_grad(), autocast_for(device, bf16=True):
        yield


def trials(model: str, device: torch.device, repeats: int, with_compile: bool, with_bf16: bool) -> list[dict]:
    """The bare network at one size under single inference techniques, against eager fp32 ``no_grad``."""
    batch, side = TRIAL_CASE[model]
    net = make_network(model).to(device)
    x = torch.rand(batch, MODELS[model]["in_channels"], side, side, device=device) * 2 - 1
    with torch.no_grad():
        reference = net(x)
    variants: dict[str, tuple[torch.nn.Module, torch.Tensor, Callable]] = {
        "eager fp32, no_grad (baseline)": (net, x, torch.no_grad),
        "inference_mode": (net, x, torch.inference_mode),
    }
    start = time.perf_counter()
    cl_net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    cl_x = x.contiguous(memory_format=torch.channels_last)
    variants["channels_last"] = (cl_net, cl_x, torch.inference_mode)
    setup = {"channels_last": time.perf_counter() - start}
    start = time.perf_counter()
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x))
    variants["TorchScript trace + freeze"] = (frozen, x, torch.no_grad)
    setup["TorchScript trace + freeze"] = time.perf_counter() - start
    bf16_mode = functools.partial(_no_grad_bf16, device)
    if with_bf16:
        variants["autocast bfloat16 (opt-in)"] = (net, x, bf16_mode)
    variants["Winograd F(4x4, 3x3), eager"] = (to_winograd(net), x, torch.inference_mode)
    if device.type == "cpu":
        variants[EAGER_DEFAULT] = (eager_layers(net), x, torch.no_grad)
    if with_compile:
        for name, fast_layers in (("torch.compile (Inductor, frozen weights)", False), (COMPILED_DEFAULT, None)):
            compiled = compile_network(copy.deepcopy(net), fast_layers=fast_layers)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(x)
            variants[name] = (compiled, x, torch.no_grad)
            setup[name] = time.perf_counter() - start
    if with_compile and with_bf16:
        compiled_bf16 = compile_network(copy.deepcopy(net), bf16=True)
        start = time.perf_counter()
        with bf16_mode():
            compiled_bf16(x)
        variants["torch.compile + autocast bfloat16 (opt-in)"] = (compiled_bf16, x, bf16_mode)
        setup["torch.compile + autocast bfloat16 (opt-in)"] = time.perf_counter() - start
    runs, diffs = {}, {}
    for name, (module, inp, mode) in variants.items():

        def run(module=module, inp=inp, mode=mode):
            with mode():
                return module(inp)

        for _ in range(2):  # warm-up; TorchScript's profiling executor optimises on its second call
            out = run()
        diffs[name] = float((out.float() - reference).abs().max())
        runs[name] = run
    best = {k: min(t) for k, t in time_calls(runs, repeats, device, warmup=0).items()}
    base = best["eager fp32, no_grad (baseline)"]
    rows = []
    for name in runs:
        rows.append(
            {"model": model, "variant": name, "seconds": best[name], "speedup": base / best[name]}
            | {"diff": diffs[name], "setup": setup.get(name, 0.0), "shape": f"{batch}x{side}x{side}"}
        )
        print(f"{model} {name}: {best[name]:.3f} s ({base / best[name]:.2f}x), diff {diffs[name]:.1e}", flush=True)
    return rows


def network_bench_parser(description: str, report: str) -> argparse.ArgumentParser:
    """The options every network benchmark takes: ``--quick``, ``--out`` (folder of the page), ``--page``
    (its file name, default ``report``), ``--device``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a tiny network and small images, for CI")
    parser.add_argument("--out", default="docs", help=f"folder for {report}")
    parser.add_argument("--page", default=report, help="file name of the page in --out")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def bench_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU."""
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def main(argv: list[str] | None = None) -> int:
    parser = network_bench_parser(__doc__.splitlines()[0], family_page("enhance"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--models", nargs="*", default=None, help="subset of: shipped paper")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Every case compiles its own static shape; past Dynamo's default of 8 compilations of the same
    # forward (counted over all instances) it would silently run the rest eager.
    torch._dynamo.config.recompile_limit = 64
    device = bench_device(args.device)
    cases = QUICK_CASES if args.quick else {m: FULL_CASES[m] for m in (args.models or FULL_CASES)}
    # quick mode (CI) takes a small product: on CPUs without bf16 hardware a 2048^3 bf16 matmul is
    # emulated and takes minutes
    side = 512 if args.quick else 2048
    # Without bfloat16 hardware the opt-in bfloat16 path is emulated (slower than float32, and the
    # enhancer warns against it): not measured there.
    with_bf16 = device.type == "cuda" or cpu_has_fast_bf16()
    peaks = {"float32": matmul_gflops(device.type, n=side)}
    if with_bf16:
        peaks["bfloat16"] = matmul_gflops(device.type, n=side, dtype=torch.bfloat16)
    print(", ".join(f"matmul {v:.0f} GFLOP/s {k}" for k, v in peaks.items()), flush=True)
    # The default path's compiled library takes minutes to build: not in quick mode (CI), not on GPUs.
    cache = use_fresh_cache() if not args.quick and device.type == "cpu" and can_compile(device) else None
    if cache is None:
        os.environ["NAPARI_USPMIE_COMPILED_CACHE"] = "off"
    rows, trial_rows = [], []
    for model, model_cases in cases.items():
        rows += bench_model(model, model_cases, device, 1 if args.quick else 3, peaks, cache)
        trial_rows += trials(model, device, 1 if args.quick else 4, not args.quick and can_compile(device), with_bf16)
    text = enhance_page(
        rows,
        trial_rows,
        peaks,
        command("bench_enhance", argv if argv is not None else sys.argv[1:]),
        args.quick,
        can_compile(device),
    )
    summary = {
        "matmul_gflops": peaks["float32"],
        **({"matmul_gflops_bf16": peaks["bfloat16"]} if with_bf16 else {}),
        "threads": torch.get_num_threads(),
        "cpu_family": cpu_family(),
        "rows": rows,
        "trials": trial_rows,
    }
    write_page(Path(args.out) / args.page, text, summary)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"wrote {Path(args.out) / args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
