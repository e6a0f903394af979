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

    python -m benchmarks.bench_call_size            # full run, writes docs/benchmarks_call_size_<CPU family>.md
    python -m benchmarks.bench_call_size --quick    # a tiny network, for CI
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from benchmarks.bench_enhance import MODELS, bench_device, can_compile, make_network, network_bench_parser
from benchmarks.machine import family_page
from benchmarks.pages import call_size_page, call_size_row, command, write_page
from benchmarks.timing import time_calls
from napari_uspmie.inference.compilation import compile_network
from napari_uspmie.inference.inferer import pixels_per_call

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
    times = time_calls({str(k): (lambda k=k: run(k)) for k in sizes}, repeats, device, warmup=0)
    per_image = {k: min(times[str(k)]) / images for k in sizes}
    picked = picked_size(net, side, images, device)
    row = {"model": model, "side": side, "images": images, "mode": mode, "picked": picked}
    row |= {"per_image_s": {str(k): v for k, v in per_image.items()}}
    row |= {"whole_over_picked": per_image[images] / per_image[picked]}
    row |= {"best_over_picked": min(per_image.values()) / per_image[picked]}
    print(call_size_row(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = network_bench_parser(__doc__.splitlines()[0], family_page("call_size")).parse_args(argv)
    torch._dynamo.config.recompile_limit = 64  # one compilation per call size
    device = bench_device(args.device)
    modes = ["eager"] + (["compiled"] if can_compile(device) and not args.quick else [])
    rows = []
    for model, side, images in QUICK_CASES if args.quick else FULL_CASES:
        for mode in modes:
            rows.append(bench_case(model, side, images, mode, device, 1 if args.quick else 3))
    text = call_size_page(rows, command("bench_call_size", argv if argv is not None else sys.argv[1:]), device)
    page = Path(args.out) / args.page
    write_page(page, text, {"device": str(device), "rows": rows})
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
