"""Run every benchmark in one go and gather the reports, of every CPU family measured, into one page.

    python -m benchmarks.run_all --out docs                          # full run, writes docs/benchmarks.md
    python -m benchmarks.run_all --quick --out outputs/bench-quick   # CI: small sizes, keeps the code alive
    python -m benchmarks.run_all --collect --out docs                # rebuild benchmarks.md from the pages

Run from the repository root. Each benchmark measures its own baseline in the same run and
reports ratios, so figures from different machines are comparable only as ratios: LaSSIM
against the paper's OpenCV + scikit-image pipeline (also with another process spinning on the
cores), enhancement against a plain eager fp32 forward (and the machine's measured matmul
FLOP/s), images per network call against one call of the whole batch, time and memory against
image size (a plot), a training iteration against a plain eager loop, napari's click to result.

Pages are per CPU family: a run writes ``benchmarks_<name>_<family>.md`` (``intel_amx``,
``amd_avx2``, ...) and leaves the other families' pages alone, so the folder keeps one set of
pages per family measured. ``benchmarks.md`` lists the families and their pages and opens with
every performance target on every family (from the JSON each benchmark leaves beside its page).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import cpu_family, family_slug, load_note, machine_info, matmul_gflops
from benchmarks.targets import targets_table

# (module, page name before the family suffix, how the module takes its output location, extra arguments)
BENCHMARKS = [
    ("bench_lassim", "benchmarks_lassim", "file", []),
    ("bench_lassim", "benchmarks_lassim_busy", "file", ["--busy", "1"]),
    ("bench_enhance", "benchmarks_enhance", "folder", []),
    ("bench_call_size", "benchmarks_call_size", "folder", []),
    ("bench_scaling", "benchmarks_scaling", "folder", []),
    ("bench_train", "benchmarks_training", "file", []),
    ("bench_napari", "benchmarks_napari", "file", []),
]


def _command(module: str, page: Path, kind: str, extra: list[str], quick: bool) -> list[str]:
    where = ["--out", str(page)] if kind == "file" else ["--out", str(page.parent), "--page", page.name]
    return [sys.executable, "-m", f"benchmarks.{module}", *where, *extra, *(["--quick"] if quick else [])]


def family_sections(folder: Path) -> list[str]:
    """Markdown lines: each CPU family with pages in ``folder``, its machine and links to its pages."""
    families: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(folder.glob("benchmarks_*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "cpu_family" in data and path.with_suffix(".md").is_file():
            families.setdefault(data["cpu_family"], []).append((path.with_suffix(".md").name, data))
    lines = ["## CPU families measured", ""]
    for family, pages in sorted(families.items()):
        machine = next((d["machine"] for _, d in pages if "machine" in d), None)
        lines.append(
            f"**{family}**" + (f" ({machine.get('cpu', '?')}, {machine.get('cores', '?')} cores)" if machine else "")
        )
        lines.append("")
        lines += [f"- [{name}]({name})" for name, _ in pages]
        lines.append("")
    return lines if families else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the reports")
    parser.add_argument(
        "--collect", action="store_true", help="run nothing: gather the pages already in --out into benchmarks.md"
    )
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # No benchmark may start background builds of compiled libraries into the user's cache; the
    # enhancement benchmark builds its own in a fresh folder before timing.
    env = {**os.environ, "NAPARI_USPMIE_COMPILED_CACHE": "off"}
    suffix = family_slug(cpu_family())
    failed = []
    for module, name, kind, extra in [] if args.collect else BENCHMARKS:
        page = out / f"{name}_{suffix}.md"
        cmd = _command(module, page, kind, extra, args.quick)
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        returncode = subprocess.run(cmd, check=False, env=env).returncode
        print(f"   {module}: exit {returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if returncode != 0 or not page.is_file():
            failed.append(f"{module} {' '.join(extra)}".strip())

    info = machine_info()
    info["measured fp32 matmul"] = f"{matmul_gflops():.1f} GFLOP/s"
    header = ["# Benchmarks", "", "This page was assembled on:", ""]
    header += [f"- {k}: {v}" for k, v in info.items()]
    header += [f"- {load_note()}"]
    header += ["", "Reproduce with `make bench` (`python -m benchmarks.run_all --out docs`): it writes the pages of"]
    header += ["the CPU family it runs on and leaves the other families' pages as they are.", ""]
    gpu = "[benchmarks_gpu.md](benchmarks_gpu.md)" if (out / "benchmarks_gpu.md").is_file() else "no GPU page yet"
    header += [f"On a machine with a CUDA GPU, `make gpu-check` writes the GPU figures ({gpu}).", ""]
    if (out / "benchmarks_analysis.md").is_file():
        header += ["Why the figures are what they are, and what was tried: [analysis](benchmarks_analysis.md).", ""]
    page = "\n".join(header + targets_table(out) + family_sections(out)) + "\n"
    (out / "benchmarks.md").write_text(page, encoding="utf-8")
    print(f"wrote {out / 'benchmarks.md'}")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
