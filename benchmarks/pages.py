"""The Markdown pages the benchmarks write, from the rows their measurements return.

Each ``*_page`` function gives one page's text; :func:`write_page` writes it with the rows as
JSON beside it (what :mod:`benchmarks.targets` reads), :func:`command` the command line it quotes.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import torch

from benchmarks.machine import cpu_family, load_note, machine_info

__all__ = [
    "command",
    "write_page",
    "LASSIM_HEADER",
    "lassim_row",
    "lassim_page",
    "enhance_row",
    "enhance_page",
    "call_size_row",
    "call_size_page",
    "scaling_plot",
    "scaling_page",
    "training_page",
]


def command(module: str, argv: list[str]) -> str:
    """The command line that reruns ``benchmarks.<module>`` with ``argv``, as a page quotes it."""
    return " ".join(["python -m", f"benchmarks.{module}", *argv])


def write_page(path: Path, text: str, data: dict) -> None:
    """Write the page ``path`` and its data as JSON beside it (same name, ``.json``), with the machine
    it was measured on (``machine``, ``cpu_family``) added to the data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    data = {"machine": machine_info(), "cpu_family": cpu_family(), **data}
    path.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")


LASSIM_HEADER = (
    "| size (HxW) | batch | device | dtype | ours (ms/pair) | reference (ms/pair) | speedup | pairs / s "
    "| peak MiB ours / reference | max abs diff |"
)


def lassim_row(row: dict) -> str:
    """One row of the LaSSIM table (also printed as each case finishes)."""
    return (
        f"| {row['size']} | {row['batch']} | {row['device']} | {row['dtype']} | {row['ours_ms']:.2f} | "
        f"{row['ref_ms']:.2f} | **{row['speedup']:.2f}x** | {row['pairs_s']:.0f} | "
        f"{row['ours_mb']:.0f} / {row['ref_mb']:.0f} | {row['max_abs_diff']:.1e} |"
    )


def lassim_page(rows: list[dict], threads: str, quick: bool, command: str) -> str:
    """``benchmarks_lassim.md``."""
    described = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    lines = [
        "# LaSSIM benchmark",
        "",
        "Time per image pair (RGB, level 3 of a 5-level pyramid) of `napari_uspmie.lassim` on a batch, against the",
        "paper's reference pipeline (scikit-image `rgb2gray`, OpenCV `pyrDown`/`pyrUp`, scikit-image",
        "`structural_similarity`) on the uint8 arrays a reader returns, one pair at a time. Ours gets the",
        'batch a user builds from those arrays (uint8, channels-last: the "uint8 user layout" rows) and',
        "contiguous float32 / float64 tensors. Speedup =",
        "reference time / our time (above 1: ours is faster). Peak memory: what one call adds to the process",
        "(the reference: one pass over the batch). The last column is the largest difference from the",
        "reference score.",
        "",
        f"Command: `{command}`. Threads: {threads}. Machine: {described}; OpenCV {cv2.__version__}; {load_note()}.",
        "Quick mode: one round, batches 1 and 2; not for quoting."
        if quick
        else "Best of 5 rounds of >= 0.5 s each, ours and the reference timed in alternation.",
        "",
        LASSIM_HEADER,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [lassim_row(row) for row in rows]
    lines += [
        "",
        "Reading the table: on a CPU, 2D float32 and float64 batches without gradients take the fast path:",
        "each axis goes down to the band's Gaussian level by matrix products on blocks of 16 outputs (the",
        "map of the pyrDown steps, built once per image size by running the reference steps on unit",
        "impulses), instead of a pass per level and tap and many small calls; float32 scores are within",
        "about 1e-7 of the reference's, float64 within 1e-15. The luma of a pair's two images goes into one",
        "buffer, so the passes run once for both. uint8 batches in the user layout (channels-last) take",
        "their luma by one blocked matrix product per image (16 pixels' interleaved samples against a",
        "block-diagonal matrix of the weights), converted to float32 one image at a time; planar batches",
        "by a product of the weights with the colour planes. The band and SSIM run on the whole batch at",
        "once. We build only the levels the band needs; the reference's OpenCV `pyrDown` is one fused SIMD",
        "pass per level, but it builds every level and band, the full-resolution band included.",
    ]
    return "\n".join(lines) + "\n"


def enhance_row(r: dict) -> str:
    """One row of the enhancement table (also printed as each case finishes)."""
    frac = {k: r["gflop"] / r[f"{k}_s"] / r["peak"] for k in ("eager", "compiled")}
    return (
        f"| {r['model']} | {r['case']} | {r['eager_s']:.3f} | {r['enhance_s']:.3f} | {r['compiled_s']:.3f} | "
        f"**{r['eager_s'] / r['compiled_s']:.2f}x** | {r['eager_s'] / r['enhance_s']:.2f}x | "
        f"{r['eager_slices_s'] / r['enhance_s']:.2f}x | "
        f"{r['images'] / r['compiled_s']:.1f} | {r['gflop']:.1f} | {100 * frac['eager']:.0f}% | "
        f"{100 * frac['compiled']:.0f}% | {r['gflop_executed']:.1f} / "
        f"{100 * r['gflop_executed'] / r['compiled_s'] / r['peak']:.0f}% | "
        f"{r['eager_mb']:.0f} / {r['enhance_mb']:.0f} / {r['compiled_mb']:.0f} | "
        f"{r['first_call']:.1f} | {_seconds(r.get('cache_build_s'))} | {r['diff']:.1e} |"
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _enhance_bf16_row(r: dict) -> str:
    fraction = 100 * r["gflop"] / r["bf16_s"] / r["peak_bf16"]
    return (
        f"| {r['model']} | {r['case']} | {r['eager_s']:.3f} | {r['bf16_s']:.3f} | "
        f"**{r['eager_s'] / r['bf16_s']:.2f}x** | {r['images'] / r['bf16_s']:.1f} | {fraction:.0f}% | "
        f"{r['bf16_mb']:.0f} | "
        f"{r['bf16_diff_mean']:.1e} / {r['bf16_diff_max']:.1e} |"
    )


def _bf16_section(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## bfloat16 (opt-in: `bf16=True`, `--bf16`, the widget's bfloat16 box)",
        "",
        "`Enhancer(compile=True, bf16=True).enhance` on the same arrays: bfloat16 autocast (float32 norms",
        "and output), compiled. Speedup against the same eager float32 baseline; `% bf16 peak`: GFLOP /",
        "seconds / measured bfloat16 matmul GFLOP/s. `diff`: mean / largest difference from the float32",
        "network's output on the case's first batch (outputs in [-1, 1]; one 8-bit grey level is 0.0078).",
        "Random weights; the shipped weights on brain MRI differ by 0.1 grey level on average",
        "(`tests/inference/test_enhancer.py::test_bf16_enhancement_is_close_to_float32`).",
        "",
        "| model | case | eager fp32 (s) | bf16 compiled (s) | speedup | images / s | % bf16 peak | peak MiB "
        "| diff mean / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return lines + [_enhance_bf16_row(r) for r in rows]


def enhance_page(
    rows: list[dict], trial_rows: list[dict], peaks: dict[str, float], command: str, quick: bool, compiled: bool
) -> str:
    """``benchmarks_enhance.md``; ``compiled``: whether a compiler ran the `compiled` column."""
    described = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    peak, peak_bf16 = peaks["float32"], peaks.get("bfloat16")
    bf16_note = (
        f"and **{peak_bf16:.0f} GFLOP/s** in bfloat16 (best 2048x2048 product)"
        if peak_bf16
        else "(best 2048x2048 product; no bfloat16 hardware: the opt-in bfloat16 path, emulated, not measured)"
    )
    lines = [
        "# Enhancement benchmark",
        "",
        f"Command: `{command}`. Machine: {described}; measured matmul **{peak:.0f} GFLOP/s** in float32",
        f"{bf16_note}; {load_note()}." + (" Quick mode: tiny network, not for quoting." if quick else ""),
        "" if compiled else "No C++ compiler (g++) on this machine: the `compiled` column ran eager.",
        "",
        "Seconds per case, best of interleaved runs after a warm-up (compiled: after its compilation, whose",
        "first call is reported apart). `eager` is the plain fp32 forward on a ready tensor, in the case's",
        "batches (the baseline); `per slice` the same one image per call. `enhance` is `Enhancer().enhance`",
        "with every setting at its default (on the CPU it runs the generator's compiled library from the",
        "per-user cache, built before timing as a first run builds it in the background: `cache build`,",
        "once per machine and model), `compiled` `Enhancer(compile=True).enhance` in the case's batches,",
        "on numpy arrays (uint8 photographs, int16 volume) (`compile=True`: Inductor, frozen weights and, on",
        "CPU in float32, 3x3 convolutions of 128 channels or more by Winograd F(4x4, 3x3)). Speedup = eager /",
        "compiled (above 1: faster); `enhance x` = eager / enhance; `enhance x per slice` = the per-slice",
        "loop / enhance (the default path against the plain eager per-slice loop). GFLOP: convolutions of",
        "the case, counted from the layer shapes as direct convolutions (the paper generator: 99.1 GFLOP per",
        "256x256 RGB image). `% peak`:",
        "GFLOP / seconds / measured matmul GFLOP/s, for the network alone (eager) and for the whole compiled",
        "enhancement (effective: Winograd does a quarter of the 3x3 layers' multiplications); `GFLOP run / %",
        "peak`: the arithmetic the compiled network actually runs (Winograd layers: tile transforms and",
        "channel products) and its fraction of the matmul peak. Peak memory: what",
        "one call adds to the process (resident set; CUDA: allocated). `diff`: largest difference between",
        "the compiled and the eager network outputs on the case's first batch (outputs in [-1, 1]).",
        "",
        "| model | case | eager (s) | enhance (s) | compiled (s) | speedup | enhance x | enhance x per slice "
        "| images / s | GFLOP "
        "| % peak eager | % peak compiled | compiled: GFLOP run / % peak | peak MiB eager / enhance / compiled "
        "| first call (s) | cache build (s) | diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [enhance_row(r) for r in rows]
    if peak_bf16:
        lines += _bf16_section(rows)
    lines += [
        "",
        "## Single techniques on the bare network",
        "",
        "The network alone on a ready tensor (shape in the table), best of interleaved runs; speedup",
        "against eager fp32 `no_grad`; `diff` against its output; setup = conversion or compilation time.",
        "",
        "| model | input | variant | seconds | speedup | diff | setup (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['shape']} | {r['variant']} | {r['seconds']:.3f} | {r['speedup']:.2f}x | "
        f"{r['diff']:.1e} | {r['setup']:.1f} |"
        for r in trial_rows
    ]
    return "\n".join(lines) + "\n"


def call_size_row(r: dict) -> str:
    """One row of the call-size table (also printed as each case finishes)."""
    times = " / ".join(f"{k}: {1000 * v:.1f}" for k, v in r["per_image_s"].items())
    return (
        f"| {r['model']} | {r['images']} x {r['side']}x{r['side']} | {r['mode']} | {times} | {r['picked']} | "
        f"**{r['whole_over_picked']:.2f}x** | {r['best_over_picked']:.2f} |"
    )


def call_size_page(rows: list[dict], command: str, device: torch.device) -> str:
    """``benchmarks_call_size.md``."""
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
    lines += [call_size_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def scaling_plot(rows: list[dict], path: Path, tile: int) -> None:
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
        label = f"enhance (above {tile}: streamed)" if mode == "tiled" else "eager forward, whole image"
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


def scaling_page(rows: list[dict], tile: int, command: str, image: str, quick: bool) -> str:
    """``benchmarks_scaling.md``, showing the plot at ``image`` (relative to the page)."""
    described = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    lines = [
        "# Scaling with image size",
        "",
        f"Command: `{command}`. Machine: {described}; {load_note()}."
        + (" Quick mode: small sizes, not for quoting." if quick else ""),
        "",
        f"`Enhancer.enhance` of a square uint16 image (shipped architecture, eager network; sides above {tile}",
        "streamed layer by layer: whole-slice instance norms, convolutions in bands of rows; the rows are",
        "labelled `tiled`) against the untiled eager forward of the whole image; each in a fresh process;",
        "added peak memory = peak resident set during the call minus the resident set before it (the input",
        "image excluded). Pixels per second stays flat (time linear in pixels); the stream holds the",
        "whole-slice feature maps (16 channels at full resolution for this generator), so its memory grows",
        "with the pixels, at well under the whole forward's.",
        "",
        "| side | mode | seconds | megapixels / s | added peak memory (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["mode"] != "tiled", r["side"])):
        mpix = r["side"] ** 2 / 1e6 / r["seconds"]
        lines.append(f"| {r['side']} | {r['mode']} | {r['seconds']:.2f} | {mpix:.2f} | {r['extra_mb']:.0f} |")
    lines += ["", f"![time and peak memory against image side]({image})", ""]
    return "\n".join(lines)


def _training_machine(device: str) -> str:
    info = machine_info()
    gpu = f", GPU {info['gpu']}" if device.startswith("cuda") and "gpu" in info else ""
    return f"{info['cpu']}, {info['cores']} logical CPUs{gpu}; torch {info['torch']}, {info['torch threads']} threads"


def training_page(
    results: list[dict], device: str, command: str, repeats_note: str, networks: dict[str, tuple[str, int]]
) -> str:
    """``benchmarks_training.md``; ``networks``: each case's networks in words and its patch size."""
    lines = [
        "# Training iteration benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {_training_machine(device)}; device `{device}`.",
        "",
        "One full LaMEGAN iteration (both cycles, generator step with the Laplacian perceptual loss, both",
        "discriminators with image pools). `trainer` is the bundle's `CycleGANTrainer` (an Ignite engine run",
        "per iteration); `eager` is a hand-written CycleGAN step over identical networks. Times: median over",
        f"{repeats_note}, both methods in one process with iterations interleaved (so load drift on a",
        "shared machine hits both alike), after one warm-up each; ratio = eager / trainer (> 1: trainer faster).",
        "Both run the same tensor operations, so the ratio measures the engine's overhead; `range` shows how much",
        "single iterations vary on this machine. On CUDA the trainer uses AMP (the bundle default), eager fp32.",
        "Peak memory: each method alone in a fresh process for its first iteration (which also allocates",
        "Adam's state): resident set on CPU (`before` = after imports, networks and batch; `iteration` = peak -",
        "before), `torch.cuda.max_memory_allocated` on CUDA.",
        "",
        "| case | networks | patch | method | s / it | range (s) | ratio | peak (MB) | before (MB) | iteration (MB) |",
        "|------|----------|-------|--------|--------|-----------|-------|-----------|-------------|----------------|",
    ]
    for r in results:
        nets, patch = networks[r["case"]]
        ratio = r["eager"]["seconds"] / r["trainer"]["seconds"]
        for method in ("trainer", "eager"):
            m = r[method]
            shown = f"{ratio:.2f}" if method == "trainer" else ""
            lines.append(
                f"| {r['case']} | {nets} | {patch} | {method} | {m['seconds']:.3f} "
                f"| {min(m['all_seconds']):.3f}-{max(m['all_seconds']):.3f} | {shown} | {m['peak_mb']:.0f} "
                f"| {m['before_mb']:.0f} | {m['peak_mb'] - m['before_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"
