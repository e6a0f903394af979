"""Enhancement time and peak memory against image size: tiling keeps memory bounded, time linear.

For square uint16 images of 256 to 4096 pixels a side, ``Enhancer.enhance`` (shipped architecture,
random weights, eager network, slices above 1024 tiled with 1024 windows, overlap 0.25, Gaussian
blending) runs in a fresh process per size, which reports its time and the peak memory the
enhancement adds (resident set, the input image excluded). For contrast, the untiled eager
forward of the whole image runs in its own processes up to ``--eager-max``. Writes a table and a
plot (``images/<page name>.png`` beside the report).

Run from the repository root::

    python -m benchmarks.bench_scaling            # writes docs/benchmarks_scaling_<CPU family>.md and the plot
    python -m benchmarks.bench_scaling --quick    # 64 to 256 pixels, tiles of 128, for CI
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import PeakMemory, family_page
from benchmarks.pages import command, scaling_page, scaling_plot, write_page
from benchmarks.timing import time_calls
from napari_uspmie.inference.checkpoint import shipped_architecture

SHIPPED = shipped_architecture()
REPO = Path(__file__).resolve().parents[1]  # the children run as modules from the repository root


def child(side: int, tile: int, mode: str) -> dict:
    """In a fresh process: time and added peak memory of enhancing (or eager forward of) a ``side``-square image."""
    from napari_uspmie.inference.enhancer import Enhancer
    from napari_uspmie.models.networks import ResnetGenerator

    torch.manual_seed(0)
    net = ResnetGenerator(**SHIPPED).eval()
    array = (np.random.default_rng(0).random((side, side)) * 4000).astype(np.uint16)
    enhancer = Enhancer(net, device="cpu", tile_size=tile, batch_size=8)
    enhancer.enhance(array[:64, :64])  # warm-up: allocator, oneDNN kernels

    def run() -> None:
        if mode == "tiled":
            enhancer.enhance(array)
        else:
            with torch.no_grad():
                net(torch.from_numpy(array.astype(np.float32) / 2000 - 1)[None, None])

    with PeakMemory() as mem:
        seconds = time_calls({mode: run}, rounds=1, warmup=0)[mode][0]
    return {"side": side, "mode": mode, "seconds": seconds, "extra_mb": mem.extra_mb}


def in_child(side: int, tile: int, mode: str, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_scaling", "--child", str(side), str(tile), mode]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 to 256 pixels, tiles of 128 (CI)")
    parser.add_argument("--out", default="docs", help="folder for the page (its plot in out/images)")
    parser.add_argument("--page", default=family_page("scaling"), help="file name of the page in --out")
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
    image = f"images/{Path(args.page).stem}.png"
    scaling_plot(rows, out / image, tile)
    text = scaling_page(
        rows, tile, command("bench_scaling", argv if argv is not None else sys.argv[1:]), image, args.quick
    )
    write_page(out / args.page, text, {"tile": tile, "rows": rows})
    print(f"wrote {out / args.page} and {out / image}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
