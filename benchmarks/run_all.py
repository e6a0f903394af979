"""Run every benchmark in one go and gather the reports into one Markdown page.

    python -m benchmarks.run_all --out docs                          # full run, writes docs/benchmarks.md
    python -m benchmarks.run_all --quick --out outputs/bench-quick   # CI: small sizes, keeps the code alive

Run from the repository root. Each benchmark measures its own baseline in the same run and
reports ratios, so figures from different machines are comparable only as ratios: LaSSIM
against the paper's OpenCV + scikit-image pipeline, enhancement against a plain eager fp32
forward (and the machine's measured matmul FLOP/s), images per network call against one call
of the whole batch, time and memory against image size (a plot), a training iteration against
a plain eager loop. The page opens with every performance target and whether this run met it
(from the JSON each benchmark leaves beside its report).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import load_note, machine_info, matmul_gflops
from benchmarks.targets import targets_table

# (module, report file name, how the module takes its output location)
BENCHMARKS = [
    ("bench_lassim", "benchmarks_lassim.md", "file"),
    ("bench_enhance", "benchmarks_enhance.md", "folder"),
    ("bench_call_size", "benchmarks_call_size.md", "folder"),
    ("bench_scaling", "benchmarks_scaling.md", "folder"),
    ("bench_train", "benchmarks_training.md", "file"),
    ("bench_napari", "benchmarks_napari.md", "file"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the reports")
    parser.add_argument(
        "--collect", action="store_true", help="run nothing: gather the reports already in --out into benchmarks.md"
    )
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # No benchmark may start background builds of compiled libraries into the user's cache; the
    # enhancement benchmark builds its own in a fresh folder before timing.
    env = {**os.environ, "NAPARI_USPMIE_COMPILED_CACHE": "off"}
    sections = []
    failed = []
    for module, report, kind in BENCHMARKS:
        target = out / report
        cmd = [sys.executable, "-m", f"benchmarks.{module}", "--out", str(target if kind == "file" else out)]
        if args.quick:
            cmd.append("--quick")
        returncode = 0
        if not args.collect:
            print(f"== {' '.join(cmd[1:])}", flush=True)
            t0 = time.perf_counter()
            returncode = subprocess.run(cmd, check=False, env=env).returncode
            print(f"   {module}: exit {returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if returncode != 0 or not target.is_file():
            failed.append(module)
            continue
        sections.append(target.read_text(encoding="utf-8"))

    info = machine_info()
    info["measured fp32 matmul"] = f"{matmul_gflops():.1f} GFLOP/s"
    header = ["# Benchmarks", "", "Measured on:", ""]
    header += [f"- {k}: {v}" for k, v in info.items()]
    header += [f"- {load_note()}"]
    header += ["", "Reproduce with `make bench` (`python -m benchmarks.run_all --out docs`).", ""]
    gpu = "[benchmarks_gpu.md](benchmarks_gpu.md)" if (out / "benchmarks_gpu.md").is_file() else "no GPU page yet"
    header += [f"On a machine with a CUDA GPU, `make gpu-check` writes the GPU figures ({gpu}).", ""]
    if (out / "benchmarks_analysis.md").is_file():
        header += ["Why the figures are what they are, and what was tried: [analysis](benchmarks_analysis.md).", ""]
    header += targets_table(out)
    if args.collect:
        header += [
            "The sections below were measured by their own scripts at other times (each states its",
            "load and threads); the machine line above was measured when this page was assembled.",
            "",
        ]
    page = "\n".join(header) + "\n" + "\n\n".join(s.strip() for s in sections) + "\n"
    (out / "benchmarks.md").write_text(page, encoding="utf-8")
    print(f"wrote {out / 'benchmarks.md'}")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
