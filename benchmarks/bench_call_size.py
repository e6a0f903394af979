"""Images per network call: time per image against the call size, and what the enhancer picks.

On a CPU, :class:`napari_uspmie.inference.inferer.EnhancementInferer` cuts a batch into calls sized by
:func:`napari_uspmie.inference.inferer.pixels_per_call` (the first convolution's output kept within a few
MiB, so the allocator reuses the activations instead of faulting fresh pages in, and each layer's
output is still in cache for the next). This benchmark runs the bare network
(eager fp32 and, with a compiler, ``compile_network``) on a ready tensor with every power-of-two
number of images per call and reports, in one run, the time per image of each, the call size the
enhancer picks, and two ratios: one call of the whole batch / the picked size (what cutting
gains) and the best measured size / the picked size (how close the rule comes to the best).

Run from the repository root::

    python benchmarks/bench_call_size.py            # full run, writes docs/benchmarks_call_size.md
    python benchmarks/bench_call_size.py --quick    # a tiny network, for CI
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_enhance import (  # noqa: E402
    MODELS,
    bench_device,
    best_interleaved,
    can_compile,
    make_network,
    network_bench_parser,
)
from machine import load_note, machine_info  # noqa: E402

from napari_uspmie.inference.enhancer import compile_network  # noqa: E402
from napari_uspmie.inference.inferer import pixels_per_call  # noqa: E402

# (model, image side, images in the batch)
FULL_CASES = [("shipped", 512, 8), ("shipped", 256, 16), ("paper", 256, 4)]
QUICK_CASES = [("tiny", 64, 4)]


def call_sizes(images: int) -> list[int]:
    """1, 2, 4, ... up to the whole batch."""
    sizes, k = [], 1
    while k < images:
        sizes.append(k)
        k *= 2
    return sizes + [images]


def picked_size(network: torch.nn.Module, side: int, images: int, device: torch.device) -> int:
    """Images per call the enhancer runs for this batch (as ``EnhancementInferer`` computes it)."""
    return max(1, min(images, pixels_per_call(network, device) // (side * side)))


def bench_case(model: str, side: int, images: int, mode: str, device: torch.device, repeats: int) -> dict:
    """Seconds per image for every call size of one case in one mode (``eager`` or ``compiled``)."""
    net = make_network(model).to(device)
    if mode == "compiled":
        net = compile_network(net)
    x = torch.rand(images, MODELS[model]["in_channels"], side, side, device=device) * 2 - 1

    def run(k: int) -> None:
        with torch.no_grad():
            for start in range(0, images, k):
                net(x[start : start + k])

    sizes = call_sizes(images)
    for k in sizes:
        run(k)  # compiles each shape once; warms the allocator
    best = best_interleaved({k: (lambda k=k: run(k)) for k in sizes}, repeats, device)
    per_image = {k: best[k] / images for k in sizes}
    picked = picked_size(net, side, images, device)
    row = {"model": model, "side": side, "images": images, "mode": mode, "picked": picked}
    row |= {"per_image_s": {str(k): v for k, v in per_image.items()}}
    row |= {"whole_over_picked": per_image[images] / per_image[picked]}
    row |= {"best_over_picked": min(per_image.values()) / per_image[picked]}
    print(_row_text(row), flush=True)
    return row


def _row_text(r: dict) -> str:
    times = " / ".join(f"{k}: {1000 * v:.1f}" for k, v in r["per_image_s"].items())
    return (
        f"| {r['model']} | {r['images']} x {r['side']}x{r['side']} | {r['mode']} | {times} | {r['picked']} | "
        f"**{r['whole_over_picked']:.2f}x** | {r['best_over_picked']:.2f} |"
    )


def markdown(rows: list[dict], command: str, device: torch.device) -> str:
    info = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    lines = [
        "# Images per network call",
        "",
        f"Command: `{command}`. Device: {device}. Machine: {info}; {load_note()}.",
        "",
        "The bare network on a ready tensor, the batch run as calls of 1, 2, 4, ... images (best of",
        "interleaved rounds; compiled: `compile_network`, after compiling each shape). `picked`: the",
        "images per call the enhancer runs on this device (`pixels_per_call`); `whole / picked`: time of",
        "one call of the whole batch over the picked size (above 1: cutting the batch gains); `best /",
        "picked`: the best measured size over the picked one (1.00: the rule found the best).",
        "",
        "| model | batch | mode | ms per image, by images per call | picked | whole / picked | best / picked |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row_text(r) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = network_bench_parser(__doc__.splitlines()[0], "benchmarks_call_size.md").parse_args(argv)
    torch._dynamo.config.recompile_limit = 64  # one compilation per call size
    device = bench_device(args.device)
    modes = ["eager"] + (["compiled"] if can_compile(device) and not args.quick else [])
    rows = []
    for model, side, images in QUICK_CASES if args.quick else FULL_CASES:
        for mode in modes:
            rows.append(bench_case(model, side, images, mode, device, 1 if args.quick else 3))
    command = "python benchmarks/bench_call_size.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks_call_size.md").write_text(markdown(rows, command.strip(), device))
    (out / "benchmarks_call_size.json").write_text(json.dumps({"device": str(device), "rows": rows}, indent=1))
    print(f"wrote {out / 'benchmarks_call_size.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
