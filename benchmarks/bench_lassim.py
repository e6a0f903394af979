"""LaSSIM throughput: this package against the paper's reference pipeline.

The reference computes one image pair at a time with scikit-image ``rgb2gray``, OpenCV
``pyrDown``/``pyrUp`` (a full 5-level pyramid, as the paper's code builds it) and
``skimage.metrics.structural_similarity`` with the joint data range of the two bands, on the
uint8 ``(H, W, 3)`` arrays an image reader returns (what the paper's pipeline gets from disk).
Ours is :func:`napari_uspmie.lassim` on the tensor a user builds from the same arrays
(``torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)``: uint8, channels-last; the
"user layout" rows) and on contiguous float32 and float64 ``(B, 3, H, W)`` tensors in [0, 1].
Both score the same ``B`` distinct pairs (scikit-image's retina, resized with
``cv2.INTER_AREA``, against its 17 x 17 box blur), so neither side is served from a cache the
other side cannot use.

Run from the repository root::

    python -m benchmarks.bench_lassim            # full run, writes docs/benchmarks_lassim_<CPU family>.md
    python -m benchmarks.bench_lassim --quick    # a few seconds, for CI
    python -m benchmarks.bench_lassim --busy 1   # with one other process spinning (shared cores)

Needs the test extras (``opencv-python-headless``, ``scikit-image``). Timings are the best
of a few rounds (the least disturbed by other processes). ``--threads`` applies to both
torch and OpenCV; by default both keep their own defaults (all cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from benchmarks.machine import PeakMemory, cpu_family, family_page, spinning_processes
from benchmarks.pages import LASSIM_HEADER, command, lassim_page, lassim_row, write_page
from benchmarks.timing import time_calls
from napari_uspmie import lassim
from tests.reference import reference_lassim  # the paper's pipeline lives once, with the tests held to it

SIZES = ((272, 480), (1024, 1024))
BATCHES = (1, 16)
#: our inputs: the user layout (uint8 channels-last, ``None``) and contiguous floats
LAYOUTS = (None, torch.float32, torch.float64)
LEVEL, MAX_LEVEL = 3, 5


def make_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Retina resized to ``height x width`` and its 17 x 17 box blur, uint8 RGB as a reader returns them."""
    clean = cv2.resize(data.retina(), (width, height), interpolation=cv2.INTER_AREA)
    return cv2.blur(clean, (17, 17)), clean


def _batch(images: list[np.ndarray], device: str, dtype: torch.dtype | None) -> torch.Tensor:
    """The batch a user builds from ``images`` (``dtype`` None: uint8 channels-last), or a float copy."""
    user = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)
    return user if dtype is None else (user.to(dtype) / 255.0).contiguous()


def run(quick: bool, devices: list[str], rounds: int, min_seconds: float) -> list[dict]:
    """One row per size, batch, device and dtype: both sides' time and memory per pair, our score's error."""
    rows: list[dict] = []
    batches = (1, 2) if quick else BATCHES
    for height, width in SIZES:
        pred, ref = make_pair(height, width)
        ref_score = reference_lassim(pred, ref)
        for batch in batches:
            # Distinct copies for both sides: each pair is read from memory, as a real batch would be.
            preds, refs = [pred.copy() for _ in range(batch)], [ref.copy() for _ in range(batch)]

            def reference(preds=preds, refs=refs):
                return [reference_lassim(a, b) for a, b in zip(preds, refs, strict=True)]

            with PeakMemory() as ref_mem:
                reference()
            for device in devices:
                for dtype in LAYOUTS:
                    p_t = _batch(preds, device, dtype)
                    r_t = _batch(refs, device, dtype)

                    def ours(p_t=p_t, r_t=r_t):
                        return lassim(p_t, r_t, level=LEVEL, max_level=MAX_LEVEL)

                    scores = ours()
                    with PeakMemory(device) as mem:
                        ours()
                    times = time_calls({"reference": reference, "ours": ours}, rounds, device, min_seconds)
                    ms, ref_ms = 1e3 * min(times["ours"]) / batch, 1e3 * min(times["reference"]) / batch
                    rows.append(
                        {
                            "size": f"{height}x{width}",
                            "batch": batch,
                            "device": device,
                            "dtype": "uint8 user layout" if dtype is None else str(dtype).replace("torch.", ""),
                            "ours_ms": ms,
                            "ref_ms": ref_ms,
                            "speedup": ref_ms / ms,
                            "pairs_s": 1e3 / ms,
                            "ours_mb": mem.extra_mb,
                            "ref_mb": ref_mem.extra_mb,
                            "max_abs_diff": float((scores.double().cpu() - ref_score).abs().max()),
                        }
                    )
                    print(lassim_row(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, batches 1 and 2 (for CI)")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and OpenCV (0: library defaults)")
    parser.add_argument(
        "--out", type=Path, default=None, help="Markdown report path (default: the family's page in docs)"
    )
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even when it is available")
    parser.add_argument("--busy", type=int, default=0, help="other processes spinning during the run")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("docs") / family_page("lassim_busy" if args.busy else "lassim")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    threads = f"torch {torch.get_num_threads()}, OpenCV {cv2.getNumThreads()} (scikit-image: 1)"
    if args.busy:
        threads += f"; {args.busy} other process(es) spinning on the cores throughout"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    rounds, min_seconds = (1, 0.0) if args.quick else (5, 0.5)
    print(LASSIM_HEADER)
    with spinning_processes(args.busy):
        rows = run(args.quick, devices, rounds, min_seconds)
    argv = argv if argv is not None else sys.argv[1:]
    write_page(
        args.out,
        lassim_page(rows, threads, args.quick, command("bench_lassim", argv)),
        {"threads": threads, "busy": args.busy, "cpu_family": cpu_family(), "rows": rows},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
