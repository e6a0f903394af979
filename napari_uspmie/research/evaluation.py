"""Evaluate enhancers on held-out data in the four cases of :mod:`napari_uspmie.research.evaluation_cases`.

For each case (a: our degradation, b: an unseen degradation family, c: clean inputs) and method
(the input itself, then each generator), per slice:

* **SSIM / PSNR to clean** (intensities in ``[0, 1]``; SSIM with a 7 x 7 uniform window);
* **LaSSIM(out, clean)** and **LaSSIM(in, clean)** at level :data:`LEVEL`: structure restored
  rather than invented; ``clean up`` is the share of slices where the output beats the input;
* **LaSSIM(in, out)** at levels 1, 2 and 3: how much of the input's structure the output kept,
  and at level 1 in the worst region (:func:`~napari_uspmie.metric.structure_check.local_lassim`);
* **checkerboard index** of output and input (period 4); ``grid ratio`` is output / input, with
  inputs below :data:`~napari_uspmie.metric.structure_check.CHECKERBOARD_FLOOR` counted at it;
* **dark-area change**: relative change of the share of head pixels darker than 30% of the
  head's 95th percentile (enlarged ventricles, dark blobs where tissue was);
* **NIQE** (lower is better) against the pristine model fitted on the clean training slices.

Case d checks that out-of-scope inputs are refused by the bundle's scope. :func:`check_targets`
compares the summary with the targets of the model card. Slices are about 200 pixels wide (1 mm
brain MRI), so level 2 is the band the paper's level 3 covers on its 480-pixel-wide images.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_uspmie.inference.checkpoint import load_generator
from napari_uspmie.inference.inferer import pad_for_network
from napari_uspmie.inference.margin import DEFAULT_MARGIN, add_margin
from napari_uspmie.inference.scope import ModelScope, read_metadata, scope_problems
from napari_uspmie.io.atomic import staged_output
from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.metric.checkerboard import checkerboard_index
from napari_uspmie.metric.lassim import lassim, ssim_map
from napari_uspmie.metric.structure_check import CHECKERBOARD_FLOOR, local_lassim, noise_level
from napari_uspmie.research.evaluation_cases import CASES, case_inputs, out_of_scope_inputs
from napari_uspmie.research.guard_report import guard_section
from napari_uspmie.research.niqe import NIQEModel

__all__ = [
    "LEVEL",
    "enhance_slice",
    "dark_fraction",
    "slice_metrics",
    "evaluate",
    "summarize",
    "check_targets",
    "evaluation_arguments",
    "load_generators",
]

LEVEL = 2
INPUT = "input (no enhancement)"
METRICS = (
    "ssim",
    "psnr",
    "lassim_out_clean",
    "lassim_in_clean",
    "lassim_in_out_1",
    "lassim_in_out_2",
    "lassim_in_out_3",
    "lassim_local_1",
    "checker_in",
    "checker_out",
    "dark_change",
    "niqe",
)


@torch.no_grad()
def enhance_slice(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Run a generator on a ``[0, 1]`` slice as the product does: scale to ``[-1, 1]``, put the
    product's margin around it (``DEFAULT_MARGIN``, :func:`add_margin`), pad to a multiple of 4, crop back."""
    h, w = image.shape
    m = DEFAULT_MARGIN
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) * 2 - 1)[None, None]
    x, _ = pad_for_network(add_margin(x, m))
    y = net(x)[0, 0, m : m + h, m : m + w].numpy()
    return np.clip((y.astype(np.float64) + 1) / 2, 0, 1)


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two ``[0, 1]`` images (7 x 7 uniform window, data range 1)."""
    t = torch.from_numpy(np.stack([x, y]).astype(np.float64))[:, None]
    return float(ssim_map(t[:1], t[1:], torch.ones(1, dtype=torch.float64)).mean())


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def dark_fraction(image: np.ndarray, head: np.ndarray) -> float:
    """Share of the ``head`` mask's pixels darker than 30% of the head's 95th percentile."""
    values = image[head]
    if values.size == 0:
        return float("nan")
    return float(np.mean(values < 0.3 * np.percentile(values, 95)))


def head_mask(image: np.ndarray) -> np.ndarray:
    """Pixels inside the head: intensity above 0.1 (median-filtered), holes (ventricles) filled, the
    rim (2 pixels, where the head meets the background) left out."""
    inside = ndimage.binary_fill_holes(ndimage.median_filter(image, 3) > 0.1)
    return ndimage.binary_erosion(inside, iterations=2)


def slice_metrics(output: np.ndarray, inp: np.ndarray, clean: np.ndarray, niqe_model: NIQEModel | None) -> dict:
    """All per-slice metrics of one method's ``output`` (see the module docstring)."""
    head = head_mask(clean)
    dark_in, dark_out = dark_fraction(inp, head), dark_fraction(output, head)
    m = {
        "ssim": ssim(output, clean),
        "psnr": _psnr(output, clean),
        "lassim_out_clean": lassim(output, clean, level=LEVEL),
        "lassim_in_clean": lassim(inp, clean, level=LEVEL),
        **{f"lassim_in_out_{k}": lassim(output, inp, level=k) for k in (1, 2, 3)},
        "lassim_local_1": float(local_lassim(output[None, None], inp[None, None], 1)[0]),
        "checker_in": float(checkerboard_index(inp)),
        "checker_out": float(checkerboard_index(output)),
        "noise_in": float(noise_level(inp[None, None])[0]),
        "dark_change": dark_out / dark_in - 1 if dark_in > 0.01 else float("nan"),
        "niqe": float("nan"),
    }
    if niqe_model is not None:
        try:
            m["niqe"] = niqe_model.score(output)
        except ValueError:
            pass  # too small or flat for NIQE patches: left out of the mean
    return m


def evaluate(
    dataset_dir: str | Path,
    generators: dict[str, torch.nn.Module | Callable[[np.ndarray], np.ndarray]],
    niqe_model: NIQEModel | None = None,
    every: int = 1,
    scope: ModelScope | None = None,
) -> dict:
    """Per-slice metrics of the input and of each generator in cases a-c, and case d's refusals.

    Args:
        dataset_dir: folder written by :func:`napari_uspmie.research.mri_dataset.build_mri_dataset`.
        generators: method name -> A->B generator (or any ``[0, 1]`` slice -> slice callable).
        niqe_model: pristine model; default ``dataset_dir/niqe_pristine.npz`` when it exists.
        every: use every ``every``-th held-out item only (quick checks); 1 uses all.
        scope: the scope case d is checked against (default: the shipped bundle's).

    Returns:
        ``{"rows": [{"case", "group", "name", "method", **metrics}], "out_of_scope": [...], "level",
        "examples"}``; ``examples`` (arrays, not JSON) holds per case the first slice of each group
        with every method's output, for :func:`save_case_figures`.
    """
    dataset_dir = Path(dataset_dir)
    if niqe_model is None and (dataset_dir / "niqe_pristine.npz").exists():
        niqe_model = NIQEModel.load(dataset_dir / "niqe_pristine.npz")
    rows = []
    examples: dict[str, list] = {}
    for case, group, name, inp, clean in case_inputs(dataset_dir, every=every):
        outputs = {INPUT: inp}
        for method, gen in generators.items():
            outputs[method] = enhance_slice(gen, inp) if isinstance(gen, torch.nn.Module) else gen(inp)
        shown = examples.setdefault(case, [])
        if all(g != group for g, *_ in shown):  # the first slice of every group, for the figures
            shown.append((group, name, inp, outputs, clean))
        for method, out in outputs.items():
            rows.append({"case": case, "group": group, "name": name, "method": method})
            rows[-1].update(slice_metrics(out, inp, clean, niqe_model))
    scope = scope or ModelScope.from_metadata(read_metadata(bundle_path()))
    refusals = []
    for item in out_of_scope_inputs():
        problems = scope_problems(scope, channels=item["channels"], modality=item["modality"], spacing=item["spacing"])
        refusals.append({"name": item["name"], "refused": bool(problems), "reasons": problems})
    return {"rows": rows, "out_of_scope": refusals, "level": LEVEL, "examples": examples}


def _share(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize(result: dict) -> list[dict]:
    """Per (case, method): mean of each metric, and shares of slices meeting each per-slice rule."""
    rows = result["rows"]
    base = {(r["case"], r["name"]): r for r in rows if r["method"] == INPUT}
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["case"] == case):
            ms = [r for r in rows if r["case"] == case and r["method"] == method]
            s = {"case": case, "method": method, "n": len(ms)}
            for key in METRICS:
                vals = np.array([r[key] for r in ms], dtype=np.float64)
                s[key] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
            ratios = [r["checker_out"] / max(r["checker_in"], CHECKERBOARD_FLOOR) for r in ms]
            s["grid_ratio_max"] = float(np.max(ratios))
            s["lassim_local_1_min"] = float(np.min([r["lassim_local_1"] for r in ms]))
            s["grid_ok"] = _share([q <= 1.5 for q in ratios])
            s["ssim_up"] = _share([r["ssim"] > base[(case, r["name"])]["ssim"] for r in ms])
            s["clean_up"] = _share([r["lassim_out_clean"] >= r["lassim_in_clean"] for r in ms])
            dark = [abs(r["dark_change"]) for r in ms if np.isfinite(r["dark_change"])]
            s["dark_ok"] = _share([d <= 0.15 for d in dark])
            out.append(s)
    return out


def check_targets(summary: list[dict], result: dict, method: str) -> list[dict]:
    """The model card's targets for ``method``: ``[{"target", "value", "met"}]``."""
    by_case = {s["case"]: s for s in summary if s["method"] == method}
    a, b, c = (by_case.get(CASES[k], {}) for k in "abc")
    refused = [r["refused"] for r in result.get("out_of_scope", [])]
    rows = [
        (
            "checkerboard index <= 1.5x the input's, every slice of every case",
            min(s.get("grid_ok", 0.0) for s in (a, b, c)),
            lambda v: v == 1.0,
        ),
        ("clean inputs: mean LaSSIM(in, out) at level 1 >= 0.9", c.get("lassim_in_out_1", 0.0), lambda v: v >= 0.9),
        ("clean inputs: dark-area fraction within +-15% (share of slices)", c.get("dark_ok", 0.0), lambda v: v == 1.0),
        ("unseen degradation: SSIM to clean up on >= 80% of slices", b.get("ssim_up", 0.0), lambda v: v >= 0.8),
        (
            "unseen degradation: LaSSIM(out, clean) >= LaSSIM(in, clean) on >= 90%",
            b.get("clean_up", 0.0),
            lambda v: v >= 0.9,
        ),
        ("out-of-scope inputs refused", _share(refused), lambda v: v == 1.0),
    ]
    return [{"target": t, "value": float(v), "met": bool(rule(v))} for t, v, rule in rows]


def format_markdown(summary: list[dict], result: dict, level: int = LEVEL) -> str:
    """Markdown tables: metrics per case and method, case d, and the targets of the last method."""
    lines = [
        f"LaSSIM to clean at Laplacian level {level}; LaSSIM(in, out) at levels 1/2/3. Means over slices; "
        "SSIM up / clean up: share of slices where the output beats the input (SSIM, LaSSIM to clean); "
        "grid ratio: checkerboard index output / input (worst slice); dark: share of slices whose dark-area "
        "fraction changed by at most 15%. NIQE: lower is better. Worst region: LaSSIM(in, out) at level 1 "
        "of each slice's worst region (16 x 16 pixels), mean / lowest over slices: a local loss the slice's "
        "score averages away.",
        "",
        "| case | method | n | SSIM | PSNR | SSIM up | LaSSIM(out, clean) | LaSSIM(in, clean) | clean up "
        "| LaSSIM(in, out) L1/L2/L3 | worst region | grid ratio max | dark ok | NIQE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        inp = s["method"] == INPUT
        up = "-" if inp else f"{100 * s['ssim_up']:.0f}%"
        clean_up = "-" if inp else f"{100 * s['clean_up']:.0f}%"
        lines.append(
            f"| {s['case']} | {s['method']} | {s['n']} | {s['ssim']:.3f} | {s['psnr']:.2f} | {up} | "
            f"{s['lassim_out_clean']:.3f} | {s['lassim_in_clean']:.3f} | {clean_up} | "
            f"{s['lassim_in_out_1']:.3f} / {s['lassim_in_out_2']:.3f} / {s['lassim_in_out_3']:.3f} | "
            f"{s['lassim_local_1']:.3f} / {s['lassim_local_1_min']:.3f} | {s['grid_ratio_max']:.2f} | "
            f"{100 * s['dark_ok']:.0f}% | {s['niqe']:.2f} |"
        )
    lines += ["", "| d: out-of-scope input | refused | reason |", "|---|---|---|"]
    for r in result.get("out_of_scope", []):
        lines.append(f"| {r['name']} | {'yes' if r['refused'] else 'NO'} | {'; '.join(r['reasons']) or '-'} |")
    lines += guard_section(result, [r for r in result["rows"] if r["method"] != INPUT])
    methods = [s["method"] for s in summary if s["method"] != INPUT]
    if methods:
        lines += ["", f"Targets ({methods[-1]}):", "", "| target | value | met |", "|---|---|---|"]
        for t in check_targets(summary, result, methods[-1]):
            lines.append(f"| {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def save_case_figures(result: dict, method: str, stem: str | Path) -> list[Path]:
    """One figure per case: input / ``method``'s output / clean / LaSSIM(input, output) heatmap.

    Returns:
        The written paths, ``<stem>_case_<a|b|c>.png`` (replaced when they exist).
    """
    from napari_uspmie.io.figures import save_comparison_grid
    from napari_uspmie.metric.lassim import lassim_map

    paths = []
    for case, shown in result.get("examples", {}).items():
        rows = []
        for group, name, inp, outputs, clean in shown:
            out = outputs[method]
            heat = lassim_map(out, inp, level=LEVEL)
            rows.append((f"{group}\n{name}", [inp, out, clean], heat))
        columns = ["input", f"{method} output", "clean", f"LaSSIM(input, output), level {LEVEL}"]
        path = Path(f"{stem}_case_{case[0]}.png")
        save_comparison_grid(rows, columns, path, title=case, overwrite=True)
        paths.append(path)
    return paths


def evaluation_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every evaluation command takes: the dataset, generators, output and subsampling."""
    parser.add_argument("dataset_dir")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="generator to evaluate")
    parser.add_argument("--out", help="write the Markdown here (and per-slice JSON beside it)")
    parser.add_argument("--every", type=int, default=1, help="evaluate every N-th held-out slice only")
    return parser


def load_generators(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """The ``--model NAME=PATH`` generators, after checking that the dataset has held-out data and
    that the ``--out`` report's folder exists (it is made here, before the long evaluation).

    Exits (status 2, through ``parser``) on a dataset without ``heldout/``, a malformed ``--model``
    or an ``--out`` whose folder cannot be made.
    """
    if not (Path(args.dataset_dir) / "heldout").is_dir():
        parser.exit(2, f"error: {args.dataset_dir}: no held-out data (heldout/); build it with build-mri-dataset.\n")
    if args.out:
        folder = Path(args.out).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.exit(2, f"error: {args.out}: cannot make its folder {folder} ({e.strerror}); pick another --out.\n")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    gens = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--model expects NAME=PATH, got {spec!r}")
        gens[name] = load_generator(path)[0]
    return gens


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_uspmie.research.evaluation DATASET_DIR --model NAME=PATH ... [--out table.md]``."""
    parser = evaluation_arguments(argparse.ArgumentParser(prog="evaluate-mri", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    gens = load_generators(parser, args)
    result = evaluate(args.dataset_dir, gens, every=args.every)
    table = format_markdown(summarize(result), result)
    print(table)
    if args.out:  # a rerun replaces its own report, through a temporary name
        out = Path(args.out)
        with staged_output(out, overwrite=True) as tmp:
            tmp.write_text(table)
        if gens:
            save_case_figures(result, list(gens)[-1], out.with_suffix(""))
        result.pop("examples")
        with staged_output(out.with_suffix(".json"), overwrite=True) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
