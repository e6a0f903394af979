"""Enhancement time and peak memory against image size: tiling keeps memory bounded, time linear.

For square uint16 images of 256 to 4096 pixels a side, ``Enhancer.enhance`` (shipped architecture,
random weights, eager network, slices above 1024 tiled with 1024 windows, overlap 0.25, Gaussian
blending) runs in a fresh process per size, which reports its time and the peak memory the
enhancement adds (resident set, the input image excluded). For contrast, the untiled eager
forward of the whole image runs in its own processes up to ``--eager-max``. Writes a table and a
plot (``images/bench_scaling.png`` beside the report).

Run from the repository root::

    python benchmarks/bench_scaling.py            # writes docs/benchmarks_scaling.md and the plot
    python benchmarks/bench_scaling.py --quick    # 64 to 256 pixels, tiles of 128, for CI
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import PeakMemory, load_note, machine_info  # noqa: E402

from napari_uspmie.inference.checkpoint import shipped_architecture  # noqa: E402

SHIPPED = shipped_architecture()


def child(side: int, tile: int, mode: str) -> dict:
    """In a fresh process: time and added peak memory of enhancing (or eager forward of) a ``side``-square image."""
    from napari_uspmie.inference.enhancer import Enhancer
    from napari_uspmie.models.networks import ResnetGenerator

    torch.manual_seed(0)
    net = ResnetGenerator(**SHIPPED).eval()
    array = (np.random.default_rng(0).random((side, side)) * 4000).astype(np.uint16)
    enhancer = Enhancer(net, device="cpu", tile_size=tile, batch_size=8)
    enhancer.enhance(array[:64, :64])  # warm-up: allocator, oneDNN kernels
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if mode == "tiled":
            enhancer.enhance(array)
        else:
            with torch.no_grad():
                net(torch.from_numpy(array.astype(np.float32) / 2000 - 1)[None, None])
        seconds = time.perf_counter() - t0
    return {"side": side, "mode": mode, "seconds": seconds, "extra_mb": mem.extra_mb}


def in_child(side: int, tile: int, mode: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(side), str(tile), mode, "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path, tile: int) -> None:
    """Time and memory against side, log-log, with the linear-in-pixels line through the tiled points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    for mode, style in (("tiled", "o-"), ("eager", "s--")):
        pts = sorted((r["side"], r["seconds"], r["extra_mb"]) for r in rows if r["mode"] == mode)
        if not pts:
            continue
        sides = [p[0] for p in pts]
        label = f"enhance, tiles of {tile}" if mode == "tiled" else "eager forward, whole image"
        ax_t.loglog(sides, [p[1] for p in pts], style, label=label)
        ax_m.semilogx(sides, [p[2] for p in pts], style, label=label)
    tiled = sorted((r["side"], r["seconds"]) for r in rows if r["mode"] == "tiled")
    if tiled:
        s0, t0 = tiled[-1]
        ax_t.loglog([p[0] for p in tiled], [t0 * (p[0] / s0) ** 2 for p in tiled], ":", color="grey", label="∝ pixels")
    ax_t.set(xlabel="image side (pixels)", ylabel="seconds", title="time")
    ax_m.set(xlabel="image side (pixels)", ylabel="added peak memory (MiB)", title="peak memory")
    sides = sorted({r["side"] for r in rows})
    for ax in (ax_t, ax_m):
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.xaxis.set_minor_formatter(NullFormatter())  # the log axis would label its minor ticks too
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def markdown(rows: list[dict], tile: int, command: str, image: str, quick: bool) -> str:
    described = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    lines = [
        "# Scaling with image size",
        "",
        f"Command: `{command}`. Machine: {described}; {load_note()}."
        + (" Quick mode: small sizes, not for quoting." if quick else ""),
        "",
        f"`Enhancer.enhance` of a square uint16 image (shipped architecture, eager network; sides above {tile}",
        f"tiled with {tile} windows, overlap 0.25, Gaussian blending) against the untiled eager forward of the",
        "whole image; each in a fresh process; added peak memory = peak resident set during the call minus the",
        "resident set before it (the input image excluded). Pixels per second stays flat (time linear in",
        "pixels) while tiling holds the added memory to a few windows' activations.",
        "",
        "| side | mode | seconds | megapixels / s | added peak memory (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["mode"] != "tiled", r["side"])):
        mpix = r["side"] ** 2 / 1e6 / r["seconds"]
        lines.append(f"| {r['side']} | {r['mode']} | {r['seconds']:.2f} | {mpix:.2f} | {r['extra_mb']:.0f} |")
    lines += ["", f"![time and peak memory against image side]({image})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 to 256 pixels, tiles of 128 (CI)")
    parser.add_argument("--out", default="docs", help="folder for benchmarks_scaling.md (plot in out/images)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--eager-max", type=int, default=2048, help="largest side for the untiled eager forward")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(int(args.child[0]), int(args.child[1]), args.child[2])))
        return 0
    sides, tile = ((64, 128, 256), 128) if args.quick else ((256, 512, 1024, 2048, 4096), 1024)
    eager_max = min(args.eager_max, sides[-2]) if args.quick else args.eager_max
    threads = torch.get_num_threads()
    rows = []
    for side in sides:
        for mode in ("tiled", "eager"):
            if mode == "eager" and side > eager_max:
                continue
            rows.append(in_child(side, tile, mode, threads))
            r = rows[-1]
            print(f"{side} {mode}: {r['seconds']:.2f} s, +{r['extra_mb']:.0f} MiB", flush=True)
    out = Path(args.out)
    image = "images/bench_scaling.png"
    plot(rows, out / image, tile)
    command = "python benchmarks/bench_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "benchmarks_scaling.md").write_text(markdown(rows, tile, command.strip(), image, args.quick))
    (out / "benchmarks_scaling.json").write_text(json.dumps({"tile": tile, "rows": rows}, indent=1))
    print(f"wrote {out / 'benchmarks_scaling.md'} and {out / image}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
