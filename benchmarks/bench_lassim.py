"""LaSSIM throughput: this package against the paper's reference pipeline.

The reference computes one image pair at a time with scikit-image ``rgb2gray``, OpenCV
``pyrDown``/``pyrUp`` (a full 5-level pyramid, as the paper's code builds it) and
``skimage.metrics.structural_similarity`` with the joint data range of the two bands.
Ours is :func:`napari_uspmie.lassim` on a ``(B, 3, H, W)`` tensor. Both score a real image
(scikit-image's retina, resized with ``cv2.INTER_AREA``) against its 17 x 17 box blur.

Run from the repository root::

    python benchmarks/bench_lassim.py            # full run, writes docs/benchmarks_lassim.md
    python benchmarks/bench_lassim.py --quick    # a few seconds, for CI

Needs the test extras (``opencv-python-headless``, ``scikit-image``). Timings are the best
of a few rounds (the least disturbed by other processes). ``--threads`` applies to both
torch and OpenCV, so both sides use the same number of cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from napari_uspmie import lassim

# The paper's reference pipeline lives once, with the tests that hold us to it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reference import reference_lassim  # noqa: E402

SIZES = ((272, 480), (1024, 1024))
BATCHES = (1, 16)
DTYPES = (torch.float64, torch.float32)
LEVEL, MAX_LEVEL = 3, 5


def _seconds_per_call(fn: Callable[[], object], min_seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def best_times(fns: list[Callable[[], object]], rounds: int, min_seconds: float) -> list[float]:
    """Best seconds per call of each function, timed in alternation round after round.

    Alternating keeps the ratio fair when the machine's load drifts (shared CPUs).
    """
    for fn in fns:
        fn()  # warm-up: allocator, lazy initialisation, CUDA kernels
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _seconds_per_call(fn, min_seconds))
    return best


def make_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Retina resized to ``height x width`` and its 17 x 17 box blur, float64 RGB in [0, 1]."""
    clean = cv2.resize(data.retina(), (width, height), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    return cv2.blur(clean, (17, 17)), clean


def _batch(image: np.ndarray, batch: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    one = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(device, dtype)
    return one.repeat(batch, 1, 1, 1).contiguous()


def run(quick: bool, devices: list[str], rounds: int, min_seconds: float) -> list[dict]:
    rows: list[dict] = []
    batches = (1, 2) if quick else BATCHES
    for height, width in SIZES:
        pred, ref = make_pair(height, width)
        ref_score = reference_lassim(pred, ref)

        def reference(pred=pred, ref=ref):
            return reference_lassim(pred, ref)

        for batch in batches:
            for device in devices:
                for dtype in DTYPES:
                    # repeat() makes distinct copies, so no item is served from another's cache lines.
                    p_t = _batch(pred, batch, device, dtype)
                    r_t = _batch(ref, batch, device, dtype)

                    def ours(p_t=p_t, r_t=r_t, device=device):
                        out = lassim(p_t, r_t, level=LEVEL, max_level=MAX_LEVEL)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        return out

                    scores = ours()
                    # The reference has no batching: one pair at a time, timed beside each case.
                    ref_s, ours_s = best_times([reference, ours], rounds, min_seconds)
                    ms, ref_ms = 1e3 * ours_s / batch, 1e3 * ref_s
                    rows.append(
                        {
                            "size": f"{height}x{width}",
                            "batch": batch,
                            "device": device,
                            "dtype": str(dtype).replace("torch.", ""),
                            "ours_ms": ms,
                            "ref_ms": ref_ms,
                            "speedup": ref_ms / ms,
                            "max_abs_diff": float((scores.double().cpu() - ref_score).abs().max()),
                        }
                    )
                    print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(row: dict) -> str:
    return (
        f"| {row['size']} | {row['batch']} | {row['device']} | {row['dtype']} | {row['ours_ms']:.2f} | "
        f"{row['ref_ms']:.2f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.1e} |"
    )


def _cpu_name() -> str:
    try:  # the shared description of the benchmarks, when run from the benchmarks folder
        from machine import machine_info

        return machine_info()["cpu"]
    except ImportError:
        return platform.processor() or platform.machine()


def markdown(rows: list[dict], threads: int, quick: bool) -> str:
    cpu = _cpu_name()
    lines = [
        "# LaSSIM benchmark",
        "",
        "Time per image pair (RGB, level 3 of a 5-level pyramid) of `napari_uspmie.lassim` on a batch, against the",
        "paper's reference pipeline (scikit-image `rgb2gray`, OpenCV `pyrDown`/`pyrUp`, scikit-image",
        "`structural_similarity`, one pair at a time, float64). Speedup = reference time / our time",
        "(above 1: ours is faster). The last column is the largest difference from the reference score.",
        "",
        f"Machine: {cpu}, {threads} thread(s) for torch and OpenCV; Python {platform.python_version()}, "
        f"torch {torch.__version__}, OpenCV {cv2.__version__}.",
        "Quick mode: one round, batches 1 and 2; not for quoting."
        if quick
        else "Best of 5 rounds of >= 0.5 s each, ours and the reference timed in alternation.",
        "Command: `python benchmarks/bench_lassim.py" + (" --quick" if quick else "") + f" --threads {threads}`.",
        "",
        "| size (HxW) | batch | device | dtype | ours (ms/pair) | reference (ms/pair) | speedup | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row_text(row) for row in rows]
    lines += [
        "",
        "Reading the table: float32 is the speed path (scores within about 1e-7 of the reference), float64 the",
        "exact path (1e-15). The reference's OpenCV `pyrDown` is one fused SIMD pass per level; PyTorch runs the",
        "same arithmetic as several element-wise passes over the image, so on a CPU the float64 path is",
        "memory-bound and slower than the reference, while float32 (half the bytes) is about as fast or faster,",
        "more so for large images. Batches on a CPU are processed in cache-sized pieces. On shared machines the",
        "absolute times vary from run to run; ours and the reference are timed in alternation, so the ratios are",
        "the figures to compare.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, batches 1 and 2 (for CI)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and OpenCV (0: library defaults)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks_lassim.md"), help="Markdown report path")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even when it is available")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    threads = torch.get_num_threads()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    rounds, min_seconds = (1, 0.0) if args.quick else (5, 0.5)
    print("| size (HxW) | batch | device | dtype | ours (ms/pair) | reference (ms/pair) | speedup | max abs diff |")
    rows = run(args.quick, devices, rounds, min_seconds)
    report = markdown(rows, threads, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
